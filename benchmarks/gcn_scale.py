"""SNN inference time and memory on a graph of 20NG's size, as ratios to the ANN forward in the same run.

A random symmetric graph with 20NG's size (61,603 nodes, ~27 M non-zeros in A-hat incl. self-loops) and the
Text GCN shape (featureless X = I, 200 hidden, 20 classes, no bias) is converted with ``spikegcn.convert``.
Times are taken in one process, the configurations interleaved (best of ``--repeat``), so that all see the
same machine load; peak memory (VmHWM, reset after the graph and model are built) is measured with each
configuration in its own process:

* ``ann``: the PyG model (GCNConv on a normalised torch sparse CSR adjacency, i.e. spmm);
* ``functional`` and ``exact`` (Tw = T, and Tw < T): the converted SNN;
* ``clock``: a dense clock-driven simulation of the same SNN (every phase a full sparse matmul of every layer,
  as rate-coded simulators do).

    python benchmarks/gcn_scale.py [--nodes 61603 --nnz 26990597 --T 16 --Q 1.3 --tw-small 8 --threads 2]

Writes results/gcn_scale.json and results/gcn_scale.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCNConv

from spikegcn.fileio import write_json, write_text


class TextGCN(nn.Module):
    def __init__(self, n, hidden, classes):
        super().__init__()
        self.conv1 = GCNConv(n, hidden, normalize=False, bias=False)
        self.conv2 = GCNConv(hidden, classes, normalize=False, bias=False)

    def forward(self, x, adj_t):
        h = F.relu(self.conv1(x, adj_t))
        h = F.dropout(h, 0.5, self.training)
        return self.conv2(h, adj_t)


def random_graph(n: int, nnz: int, seed: int = 0):
    """Symmetric random graph whose normalised adjacency (with self-loops) has about ``nnz`` non-zeros."""
    g = torch.Generator().manual_seed(seed)
    m = (nnz - n) // 2
    src = torch.randint(0, n, (m,), generator=g)
    dst = torch.randint(0, n, (m,), generator=g)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    loops = torch.arange(n)
    row = torch.cat([src, dst, loops])
    col = torch.cat([dst, src, loops])
    key = torch.unique(row * n + col)
    row, col = key // n, key % n
    deg = torch.bincount(row, minlength=n).float()
    w = deg[row].rsqrt() * deg[col].rsqrt()
    crow = torch.zeros(n + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
    adj = torch.sparse_csr_tensor(crow.int(), col.int(), w, (n, n))
    return adj


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def clock_driven(snn, adj, T: int) -> torch.Tensor:
    """Every phase a full (sparse) matmul of every layer: what a clock-driven simulator does."""

    c1, c2 = snn.conv1, snn.conv2
    W0, W1 = c1.lin.weight, c2.lin.weight
    code = c1.code
    thr = code.thresholds()

    def run(layer_in_values_at, op, scale, signed, out_shape, potential=False):
        P = torch.zeros(out_shape)
        phase = torch.zeros(out_shape, dtype=torch.int8)
        sign = torch.zeros(out_shape, dtype=torch.int8)
        for t in range(1, T + 1):
            P += op(layer_in_values_at(t)) / scale
            if potential:
                continue
            mag = P.abs() if signed else P
            now = (mag >= thr[t - 1]) & (phase == 0)
            phase[now] = t
            sign[now] = torch.sign(P[now]).to(torch.int8)
        if potential:
            return P
        return code.values()[phase.long()] * sign * scale, phase

    n = adj.shape[0]
    # MP1: X = I, every node's single spike arrives at phase 1
    v1, p1 = run(lambda t: W0.t() if t == 1 else torch.zeros(n, W0.shape[0]), lambda x: x, c1.lin.scale, True,
                 (n, W0.shape[0]))
    vh, ph = run(lambda t: v1 * (p1 == t), lambda x: torch.sparse.mm(adj, x), c1.aggr.scale, False,
                 (n, W0.shape[0]))
    v2, p2 = run(lambda t: vh * (ph == t), lambda x: x @ W1.t(), c2.lin.scale, True, (n, W1.shape[0]))
    return run(lambda t: v2 * (p2 == t), lambda x: torch.sparse.mm(adj, x), 1.0, False, (n, W1.shape[0]),
               potential=True)


def build(args, cfg: str):
    """The forward function of one configuration (graph and model built, synapses cached)."""
    from spikegcn import PhaseCode, convert

    adj = random_graph(args.nodes, args.nnz)
    torch.manual_seed(0)
    model = TextGCN(args.nodes, args.hidden, args.classes).eval()
    eye = torch.sparse_coo_tensor(torch.arange(args.nodes).repeat(2, 1), torch.ones(args.nodes),
                                  (args.nodes, args.nodes))
    if cfg == "ann":
        return (lambda: model(eye, adj)), None, adj, model, eye
    tw = {"functional": args.T, "exact": args.T, "exact_small": args.tw_small, "exact_small_avx2": args.tw_small,
          "exact_small_portable": args.tw_small, "clock": args.T}[cfg]
    mode = "functional" if cfg == "functional" else "exact"
    snn = convert(model, (eye, adj), PhaseCode(args.T, args.Q, Tw=tw), mode=mode)
    for m in snn.modules():
        if hasattr(m, "cached"):
            m.cached = True
    with torch.no_grad():
        snn(eye, adj)  # build and cache the synapse structures once (like GCNConv(cached=True))
    fn = (lambda: clock_driven(snn, adj, args.T)) if cfg == "clock" else (lambda: snn(eye, adj))
    if cfg in CAPPED:
        fn = capped(fn, CAPPED[cfg])
    return fn, snn, adj, model, eye


CAPPED = {"exact_small_avx2": "avx2", "exact_small_portable": "portable"}


def capped(fn, isa: str):
    """``fn`` with the fused kernel capped at ``isa`` (what CPUs without AVX-512, or without AVX2, run)."""
    def run():
        before = os.environ.get("SPIKEGCN_CPU_ISA")
        os.environ["SPIKEGCN_CPU_ISA"] = isa
        try:
            return fn()
        finally:
            if before is None:
                del os.environ["SPIKEGCN_CPU_ISA"]
            else:
                os.environ["SPIKEGCN_CPU_ISA"] = before
    return run


def kernel_name() -> str:
    from spikegcn.kernels import fused_cpu

    mod = fused_cpu.load()
    if mod is None:
        return "event kernel (torch-scatter), fused kernel unavailable"
    return {"avx512": "fused, AVX-512 int8 codes", "avx2": "fused, AVX2 int8 codes",
            "portable": "fused, portable float"}[fused_cpu.max_isa()]


def worker(args) -> dict:
    """Peak memory of one configuration's forward, in a process of its own."""
    torch.set_num_threads(args.threads)
    fn, snn, adj, model, eye = build(args, args.worker)
    with torch.no_grad():
        fn()
        reset_peak()
        base = vm_hwm_mb()
        out = fn()
        peak = vm_hwm_mb()
    res = {"config": args.worker, "peak_mb": peak, "resident_before_mb": base, "nnz": int(adj._nnz())}
    if snn is not None and args.worker != "clock":
        res["spikes_per_neuron"] = {s.name: s.spikes_per_neuron for s in snn.layer_stats()}
        res["energy_ratio_fp32"] = snn.energy()["ratio"]
        res["agree_with_ann"] = float((out.argmax(1) == model(eye, adj).argmax(1)).float().mean())
    return res


def timings(args, configs: list[str]) -> dict[str, float]:
    """Best-of-``repeat`` seconds per configuration, interleaved in one process so all see the same load."""
    torch.set_num_threads(args.threads)
    fns = {}
    for cfg in configs:
        fns[cfg] = build(args, cfg)[0]
    best = {cfg: float("inf") for cfg in configs}
    with torch.no_grad():
        for cfg in configs:
            fns[cfg]()  # warm-up (and the one-time JIT build of the fused kernel)
        for _ in range(args.repeat):
            for cfg in configs:
                t0 = time.perf_counter()
                fns[cfg]()
                best[cfg] = min(best[cfg], time.perf_counter() - t0)
    return best


def graph_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The graph, model and code options (shared with benchmarks/gpu_check.py)."""
    ap.add_argument("--nodes", type=int, default=61603)
    ap.add_argument("--nnz", type=int, default=26990597)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--Q", type=float, default=1.3)
    ap.add_argument("--tw-small", type=int, default=8)
    return ap


def main() -> None:
    ap = graph_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--configs", default="ann,functional,exact,exact_small,exact_small_avx2,exact_small_portable,clock")
    ap.add_argument("--out", default="results/gcn_scale")
    ap.add_argument("--worker", default=None)
    args = ap.parse_args()
    if args.worker and args.worker != "timings":
        print(json.dumps(worker(args)))
        return
    configs = args.configs.split(",")
    if args.worker == "timings":
        print(json.dumps(timings(args, configs)))
        return
    rows = []
    for cfg in configs:
        cmd = [sys.executable, __file__, "--worker", cfg] + sys.argv[1:]
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        if p.returncode != 0:
            rows.append({"config": cfg, "error": p.stderr[-2000:]})
            print(cfg, "FAILED", p.stderr[-2000:], file=sys.stderr)
            continue
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    p = subprocess.run([sys.executable, __file__, "--worker", "timings"] + sys.argv[1:], capture_output=True,
                       text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if p.returncode != 0:
        raise SystemExit(f"timing worker failed: {p.stderr[-2000:]}")
    secs = json.loads(p.stdout.strip().splitlines()[-1])
    for r in rows:
        if r["config"] in secs:
            r["seconds"] = secs[r["config"]]
    print(secs, file=sys.stderr)
    ann = next(r for r in rows if r["config"] == "ann")
    clock = next((r for r in rows if r["config"] == "clock" and "seconds" in r), None)
    for r in rows:
        if "seconds" in r:
            r["time_ratio_to_ann"] = r["seconds"] / ann["seconds"]
            r["peak_ratio_to_ann"] = r["peak_mb"] / ann["peak_mb"]
            if clock:
                r["speedup_vs_clock"] = clock["seconds"] / r["seconds"]
    rec = {"benchmark": "gcn_scale", "args": {k: v for k, v in vars(args).items() if k != "worker"}, "rows": rows,
           "machine": f"{platform.machine()} {os.cpu_count()} cores", "torch": torch.__version__,
           "exact_kernel": kernel_name(),
           "date": date.today().isoformat(), "command": "python benchmarks/gcn_scale.py " + " ".join(sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), rec, indent=2)
    names = {"ann": "ANN forward (GCNConv, spmm)", "functional": f"SNN functional (Tw = T = {args.T})",
             "exact": f"SNN exact, Tw = T = {args.T}", "exact_small": f"SNN exact, Tw = {args.tw_small}",
             "exact_small_avx2": f"SNN exact, Tw = {args.tw_small}, AVX2 kernel (no AVX-512)",
             "exact_small_portable": f"SNN exact, Tw = {args.tw_small}, portable kernel (no AVX2)",
             "clock": "clock-driven SNN (T full spmm per layer)"}
    lines = [f"Graph of 20NG's size: {args.nodes:,} nodes, {ann['nnz']:,} non-zeros in A-hat, X = I, "
             f"{args.hidden} hidden, {args.classes} classes; T = {args.T}, Q = {args.Q}; {args.threads} threads, "
             f"{rec['machine']}, torch {torch.__version__}, {rec['date']}. Times: best of {args.repeat}, all "
             f"configurations "
             f"interleaved in one process; peak = VmHWM of one forward, each configuration in its own process. "
             f"Exact mode with Tw < T runs the {rec['exact_kernel']} kernel.",
             "", "| configuration | time / ANN | speed-up vs clock-driven | peak memory / ANN |",
             "|---|---:|---:|---:|"]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {names.get(r['config'], r['config'])} | failed | | |")
            continue
        sp = f"{r['speedup_vs_clock']:.1f}x" if clock else "n/a"
        lines.append(f"| {names.get(r['config'], r['config'])} | {r['time_ratio_to_ann']:.2f} | {sp} | "
                     f"{r['peak_ratio_to_ann']:.2f} |")
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
