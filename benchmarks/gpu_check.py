"""The GPU check: device tests on CUDA, then SNN / ANN time ratios on the GPU (one prepared run, < 6 min on an H200).

1. **tests**: the device-parametrised tests (``tests/test_device.py``, ``tests/test_triton_exact.py``) with
   ``-k cuda``: the converted GCN and CNN run on the GPU and agree with the CPU run, the cached adjacency follows
   ``.to()``, the scatter backend fits the device, the Triton kernel compiled for the GPU equals the event path.
2. **graph**: the 20NG-size graph of ``benchmarks/gcn_scale.py`` (61,603 nodes, ~27 M non-zeros in A-hat, X = I,
   200 hidden, 20 classes): the ANN forward (GCNConv: cuSPARSE spmm) against the converted SNN in functional mode
   and in exact mode with Tw = T and with Tw = ``--tw-small`` (the Triton kernel), converted on the GPU.
3. **cnn**: a ResNet-20 batch (pretrained weights where ``SPIKEGCN_WEIGHTS`` has them, else random weights with
   randomised BatchNorm statistics; random images): the ANN forward against the SNN in the same three modes.

Times are best of ``--repeat`` after two warm-up calls (compilation and autotuning happen there), all
configurations of a part interleaved, with ``torch.cuda.synchronize()`` around each call; peak memory is
``torch.cuda.max_memory_allocated`` of one call. Writes ``results/gpu_check.json`` and ``.md``.

    python benchmarks/gpu_check.py                       # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --device cpu --small --out /tmp/gpu_check   # dry run of the logic on a CPU

Without CUDA (and without ``--device cpu``) it refuses in one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

# spikegcn's kernels and Triton are imported after the CUDA check
ROOT = Path(__file__).resolve().parent.parent
MODES = [("functional", "functional", None), ("exact", "exact", None), ("exact_small", "exact", "small")]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_tests(device: torch.device, timeout: int) -> dict:
    """The device-parametrised tests for ``device`` in a subprocess; their summary line and status."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_device.py",
           "tests/test_triton_exact.py", "-k", device.type]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace"), 124
    lines = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return {"command": " ".join(cmd[2:]), "returncode": rc, "summary": lines[-1].strip("= ") if lines else "",
            "seconds": time.perf_counter() - t0, "tail": out[-3000:] if rc else ""}


def time_configs(fns: dict, device: torch.device, repeat: int) -> dict:
    """Best-of-``repeat`` seconds and peak memory per configuration (interleaved, after two warm-up calls)."""
    res = {k: {"seconds": float("inf")} for k in fns}
    with torch.no_grad():
        for k, fn in fns.items():
            for _ in range(2):
                fn()
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                fn()
                sync(device)
                res[k]["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        for _ in range(repeat):
            for k, fn in fns.items():
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                res[k]["seconds"] = min(res[k]["seconds"], time.perf_counter() - t0)
    return res


def count_triton(fn):
    """``fn`` wrapped to count the Triton kernel launches it makes."""
    from spikegcn.kernels import triton_exact

    calls = [0]
    real = triton_exact.aggregate_exact

    def counting(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    def run():
        triton_exact.aggregate_exact = counting
        try:
            return fn()
        finally:
            triton_exact.aggregate_exact = real
    return run, calls


def convert_on(model, data, code, mode, device, notes: list):
    """Convert on the device; where the converter fails there, convert on the CPU and move (and say so)."""
    from spikegcn import convert

    try:
        return convert(model, data, code, mode=mode)
    except Exception as exc:  # recorded: the device-true converter is what this check is about
        notes.append(f"convert on {device.type} failed ({type(exc).__name__}: {str(exc)[:300]}); converted on the "
                     f"CPU and moved")
        cpu = tuple(d.cpu() for d in data) if isinstance(data, tuple) else data.cpu()
        return convert(copy.deepcopy(model).cpu(), cpu, code, mode=mode).to(device)


def graph_part(args, device: torch.device) -> dict:
    import gcn_scale  # the 20NG-size graph and model

    from spikegcn import PhaseCode

    n, nnz = (3000, 60000) if args.small else (args.nodes, args.nnz)
    adj = gcn_scale.random_graph(n, nnz).to(device)
    torch.manual_seed(0)
    model = gcn_scale.TextGCN(n, args.hidden, args.classes).eval().to(device)
    eye = torch.sparse_coo_tensor(torch.arange(n, device=device).repeat(2, 1), torch.ones(n, device=device), (n, n))
    notes: list[str] = []
    fns, calls = {"ann": lambda: model(eye, adj)}, {}
    for name, mode, tw in MODES:
        code = PhaseCode(args.T, args.Q, Tw=args.tw_small if tw == "small" else None)
        snn = convert_on(model, (eye, adj), code, mode, device, notes)
        for m in snn.modules():
            if hasattr(m, "cached"):
                m.cached = True  # synapse structures built once, as GCNConv(cached=True)
        fns[name], calls[name] = count_triton(lambda snn=snn: snn(eye, adj))
    res = time_configs(fns, device, args.repeat)
    with torch.no_grad():
        ref = fns["ann"]().argmax(1)
        for name in calls:
            calls[name][0] = 0
            res[name]["agree_with_ann"] = float((fns[name]().argmax(1) == ref).float().mean())
            res[name]["triton_launches"] = calls[name][0]
    return {"nodes": n, "nnz": int(adj._nnz()), "configs": res, "notes": notes}


def cnn_part(args, device: torch.device) -> dict:
    from spikegcn import PhaseCode
    from spikegcn.vision.models import load_pretrained, resnet20

    notes: list[str] = []
    try:  # only from a local copy: no download attempt on a machine that may be offline
        if not os.environ.get("SPIKEGCN_WEIGHTS"):
            raise FileNotFoundError("SPIKEGCN_WEIGHTS is not set")
        model, weights = load_pretrained("resnet20"), "pretrained"
    except Exception as exc:
        notes.append(f"pretrained ResNet-20 unavailable ({type(exc).__name__}: {exc}); random weights, randomised BN")
        torch.manual_seed(0)
        model, weights = resnet20(), "random"
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model = model.eval().to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch if not args.small else 8, 3, 32, 32, generator=g).to(device)
    fns = {"ann": lambda: model(x)}
    for name, mode, tw in MODES:
        code = PhaseCode(args.T, args.Q, Tw=args.tw_small if tw == "small" else None)
        snn = convert_on(model, x, code, mode, device, notes)
        fns[name] = lambda snn=snn: snn(x)
    res = time_configs(fns, device, args.repeat)
    with torch.no_grad():
        ref = fns["ann"]().argmax(1)
        for name, _, _ in MODES:
            res[name]["agree_with_ann"] = float((fns[name]().argmax(1) == ref).float().mean())
    return {"batch": int(x.shape[0]), "weights": weights, "configs": res, "notes": notes}


def ratios(part: dict) -> None:
    ann = part["configs"]["ann"]
    for r in part["configs"].values():
        r["time_ratio_to_ann"] = r["seconds"] / ann["seconds"]
        if "peak_mb" in r and ann.get("peak_mb"):
            r["peak_ratio_to_ann"] = r["peak_mb"] / ann["peak_mb"]


def markdown(rec: dict, args) -> str:
    names = {"ann": "ANN forward", "functional": f"SNN functional (Tw = T = {args.T})",
             "exact": f"SNN exact, Tw = T = {args.T}", "exact_small": f"SNN exact, Tw = {args.tw_small}"}
    t = rec["tests"]
    lines = [f"GPU check on {rec['device_name']}, torch {rec['torch']}, triton {rec['triton']}, {rec['date']}; "
             f"T = {args.T}, Q = {args.Q}; times best of {args.repeat} after two warm-up calls.", "",
             f"Device tests (`{t['command']}`): {t['summary'] or 'no summary'} (exit {t['returncode']}).", ""]
    for key, title in (("graph", "20NG-size graph"), ("cnn", "ResNet-20 batch")):
        part = rec.get(key)
        if part is None or "error" in part:
            lines += [f"{title}: {'not run' if part is None else 'failed: ' + part['error']}", ""]
            continue
        desc = (f"{part['nodes']:,} nodes, {part['nnz']:,} non-zeros in A-hat" if key == "graph"
                else f"batch {part['batch']}, {part['weights']} weights")
        lines += [f"{title} ({desc}):", "", "| configuration | ms | time / ANN | peak memory / ANN | argmax = ANN |",
                  "|---|---:|---:|---:|---:|"]
        for name, r in part["configs"].items():
            peak = f"{r['peak_ratio_to_ann']:.2f}" if "peak_ratio_to_ann" in r else "n/a"
            agree = f"{r['agree_with_ann']:.3f}" if "agree_with_ann" in r else ""
            lines.append(f"| {names[name]} | {r['seconds'] * 1e3:.2f} | {r['time_ratio_to_ann']:.2f} | {peak} | "
                         f"{agree} |")
        lines += [f"Note: {n}" for n in part["notes"]] + [""]
    g = rec.get("graph", {}).get("configs")
    if g:
        small = g["exact_small"]
        lines.append(f"Targets (graph): exact Tw = {args.tw_small} <= 2x ANN: {small['time_ratio_to_ann']:.2f}x "
                     f"({'met' if small['time_ratio_to_ann'] <= 2 else 'not met'}; Triton launches per forward: "
                     f"{small['triton_launches']}); functional <= 1.2x ANN: "
                     f"{g['functional']['time_ratio_to_ann']:.2f}x "
                     f"({'met' if g['functional']['time_ratio_to_ann'] <= 1.2 else 'not met'}).")
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gcn_scale  # the 20NG-size graph, its model and options

    ap = gcn_scale.graph_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="small graph and batch: a quick dry run of the logic")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--test-timeout", type=int, default=150)
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--out", default="results/gpu_check")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, or "
              "use --device cpu --small for a dry run", file=sys.stderr)
        raise SystemExit(2)
    from spikegcn.fileio import write_json, write_text
    from spikegcn.kernels import triton_exact

    t0 = time.perf_counter()
    rec = {"benchmark": "gpu_check", "args": vars(args), "date": date.today().isoformat(), "torch": torch.__version__,
           "triton": getattr(triton_exact.triton, "__version__", None),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
           f"{platform.machine()} CPU ({os.cpu_count()} cores)",
           "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:])}
    rec["tests"] = ({"command": "skipped", "returncode": None, "summary": "skipped"} if args.skip_tests
                    else run_tests(device, args.test_timeout))
    print("tests:", rec["tests"]["summary"], file=sys.stderr)
    for key, part in (("graph", graph_part), ("cnn", cnn_part)):
        try:
            rec[key] = part(args, device)
            ratios(rec[key])
        except Exception as exc:  # keep what the other parts measured
            rec[key] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        print(key, rec[key], file=sys.stderr)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rec["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    write_json(out.with_suffix(".json"), rec, indent=2)
    md = markdown(rec, args)
    write_text(out.with_suffix(".md"), md)
    print(md)
    failed = rec["tests"]["returncode"] not in (0, None) or any("error" in rec[k] for k in ("graph", "cnn"))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
