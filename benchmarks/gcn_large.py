"""Layer-wise and sharded inference on an ogbn-products-shaped synthetic graph: SNN vs PyG ANN, 1 vs 2 processes.

The graph has the shape of ogbn-products (2,449,029 nodes, 61,859,140 undirected edges, 100 features, 47
classes) times ``--scale``: seeded, generated in chunks straight into memory-mapped files, with community
structure (contiguous communities of ~2,500 nodes, ``--p-in`` of the edges inside a community, the rest uniform;
class = community mod 47; features = class mean + noise). 3-layer GCN and GraphSAGE (mean, hidden 256) are
trained briefly on an induced subgraph, converted (calibrated on that subgraph) and run over the whole graph.

Every configuration runs in its own process, one thread (peak RSS per process: VmHWM reset after the graph,
model and operators are built and the edge list, which no run reads again, is freed, so it is the inference
peak; the setup peak is reported too):

* ``ann``: PyG layer-wise inference with the same node chunks (GCN: ``lin`` then ``spmm`` of A-hat over the
  chunk's in-neighbours; SAGE: ``SAGEConv`` on the chunk's bipartite subgraph), float32 activations kept;
* ``snn-functional``, ``snn-exact`` (Tw = T) and ``snn-exact-tw`` (Tw = T/2): ``spikegcn.inference``
  (int8 codes between layers);
* ``dist1`` / ``dist2``: ``spikegcn.distributed.inference`` (functional) with 1 and 2 gloo processes of one
  thread each, per-process peak and the int8 bytes exchanged per layer; each rank builds the operators of its own
  rows in setup (``rank_chain``, ranks one after the other), as the other runs build theirs before the clock;
  with ``--repeat R`` each process group runs inference R times on them and the best wall time counts (the
  machine is shared: a neighbour's burst slows two busy processes more than one);
* ``limited``: the SNN through ``storage`` (memory-mapped codes) under RLIMIT_DATA (``ulimit -d``: private
  anonymous memory; file-backed maps do not count) set after setup to the data size then + a budget smaller
  than one layer of float32 activations; the ANN is run under the same limit to show it does not fit.

    python benchmarks/gcn_large.py --scale 1         # full size: about 100 minutes on 2 cores, 12 GB peak
    python benchmarks/gcn_large.py --scale 0.05      # 1/20 of it: about 12 minutes

Writes results/gcn_large.{json,md} (scale 1) or results/gcn_large_scale<S>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.nn.models import GCN, GraphSAGE
from torch_geometric.utils import spmm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gcn_scale import reset_peak, vm_hwm_mb  # noqa: E402

from spikegcn import PhaseCode, convert  # noqa: E402
from spikegcn.fileio import write_json, write_text  # noqa: E402
from spikegcn.inference import FeatureSource, GraphChain, chunks, restrict, run_chain, sources  # noqa: E402
from spikegcn.operators import sparse_matrix  # noqa: E402
from spikegcn.simulate import GraphOp  # noqa: E402

PRODUCTS = {"nodes": 2_449_029, "undirected_edges": 61_859_140, "features": 100, "classes": 47}
HIDDEN, LAYERS, T = 256, 3, 16
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the graph
def generate(cache: Path, scale: float, p_in: float, seed: int, chunk: int = 1 << 20) -> dict:
    """Seeded community graph of ``scale`` x ogbn-products, written chunk by chunk into .npy files."""
    n = max(1000, round(PRODUCTS["nodes"] * scale))
    m = round(PRODUCTS["undirected_edges"] * scale)
    meta = {"nodes": n, "undirected_edges_drawn": m, "p_in": p_in, "seed": seed, "scale": scale}
    done = cache / "meta.json"
    if done.exists() and json.loads(done.read_text())["params"] == meta:
        return json.loads(done.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    F_, C = PRODUCTS["features"], PRODUCTS["classes"]
    comms = max(C, n // 2500)
    x = np.lib.format.open_memmap(cache / "x.npy", mode="w+", dtype=np.float32, shape=(n, F_))
    y = np.lib.format.open_memmap(cache / "y.npy", mode="w+", dtype=np.int64, shape=(n,))
    mu = np.random.default_rng([seed, 0]).standard_normal((C, F_)).astype(np.float32)
    for k, s in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([seed, 1, k])
        ids = np.arange(s, min(n, s + chunk))
        cls = (ids * comms // n) % C
        y[ids] = cls
        x[ids] = 0.5 * mu[cls] + rng.standard_normal((ids.size, F_), dtype=np.float32)
    ei = np.lib.format.open_memmap(cache / "edge_index.tmp.npy", mode="w+", dtype=np.int64, shape=(2, 2 * m))
    kept = 0
    for k, s in enumerate(range(0, m, chunk)):
        rng = np.random.default_rng([seed, 2, k])
        b = min(m, s + chunk) - s
        u = rng.integers(0, n, b)
        c = u * comms // n
        lo, hi = -(-c * n // comms), -(-(c + 1) * n // comms)  # the node range of u's community
        v = np.where(rng.random(b) < p_in, lo + (rng.random(b) * (hi - lo)).astype(np.int64), rng.integers(0, n, b))
        keep = u != v
        u, v = u[keep], v[keep]
        ei[0, kept:kept + u.size], ei[1, kept:kept + u.size] = u, v
        kept += u.size
    out = np.lib.format.open_memmap(cache / "edge_index.npy", mode="w+", dtype=np.int64, shape=(2, 2 * kept))
    out[:, :kept], out[0, kept:], out[1, kept:] = ei[:, :kept], ei[1, :kept], ei[0, :kept]
    out.flush()
    del ei, out, x, y
    os.remove(cache / "edge_index.tmp.npy")
    info = {"params": meta, "nodes": n, "undirected_edges": kept, "directed_edges": 2 * kept, "communities": comms}
    done.write_text(json.dumps(info))
    return info


def load_graph(cache: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmap: torch never writes to x
        x = torch.from_numpy(np.load(cache / "x.npy", mmap_mode="r"))
    return x, torch.from_numpy(np.load(cache / "edge_index.npy")), torch.from_numpy(np.load(cache / "y.npy"))


def subgraph(x, edge_index, y, n_sub: int):
    keep = (edge_index[0] < n_sub) & (edge_index[1] < n_sub)
    from torch_geometric.data import Data

    return Data(x=x[:n_sub].clone(), edge_index=edge_index[:, keep], y=y[:n_sub])


def make_model(name: str):
    torch.manual_seed(0)
    C = PRODUCTS["classes"]
    if name == "gcn":
        return GCN(PRODUCTS["features"], HIDDEN, LAYERS, C)
    return GraphSAGE(PRODUCTS["features"], HIDDEN, LAYERS, C, aggr="mean")


def train(name: str, data, epochs: int) -> tuple[dict, float]:
    model = make_model(name)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(data.num_nodes, generator=g) < 0.5
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(data.x, data.edge_index)[mask], data.y[mask]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(data.x, data.edge_index).argmax(1)[~mask] == data.y[~mask]).float().mean())
    return model.state_dict(), acc


# ------------------------------------------------------------------ the ANN, layer-wise with the same chunks
def ann_setup(name: str, model, edge_index: torch.Tensor, n: int):
    if name == "gcn":
        ei, w = gcn_norm(edge_index, None, n, add_self_loops=True)
        return GraphOp(sparse_matrix(ei, w, (n, n), torch.float32))
    return GraphOp(sparse_matrix(edge_index, None, (n, n), torch.float32))


@torch.no_grad()
def ann_layerwise(name: str, model, x: torch.Tensor, op: GraphOp, chunk_size: int) -> torch.Tensor:
    """PyG's layer-wise inference scheme: layer by layer over node chunks, float32 activations in between."""
    n = x.shape[0]
    convs = model.convs
    h = x
    for i, conv in enumerate(convs):
        last = i == len(convs) - 1
        if name == "gcn":  # X W once per node, then A-hat over each chunk's in-neighbours
            m = torch.empty((n, conv.out_channels))
            for a, b in chunks(0, n, chunk_size):
                m[a:b] = conv.lin(torch.as_tensor(h[a:b]))
            h = m
        out = torch.empty((n, conv.out_channels))
        for a, b in chunks(0, n, chunk_size):
            src = sources(op, a, b)
            sub = restrict(op, a, b, src).adj
            if name == "gcn":
                y = spmm(sub, h[src], reduce="sum") + conv.bias
            else:  # SAGEConv on the chunk's bipartite graph (sources -> targets): mean, lin_l, root lin_r
                crow, col = sub.crow_indices(), sub.col_indices().long()
                row = torch.repeat_interleave(torch.arange(b - a), crow[1:] - crow[:-1])
                y = conv((torch.as_tensor(h[src]), torch.as_tensor(h[a:b])), torch.stack([col, row]),
                         size=(src.numel(), b - a))
            out[a:b] = y if last else y.relu()
        h = out
    return h


# ------------------------------------------------------------------ one configuration in this process
def proc_status_kb(key: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmData, ...)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields[key].split()[0])


def rss_mb() -> float:
    return proc_status_kb("VmRSS") / 1024


def vm_data_bytes() -> int:
    return proc_status_kb("VmData") * 1024


def setup(cfg: dict):
    torch.set_num_threads(1)
    cache = Path(cfg["cache"])
    x, edge_index, y = load_graph(cache)
    model = make_model(cfg["model"])
    model.load_state_dict(torch.load(cache / f"{cfg['model']}.pt", weights_only=True))
    model.eval()
    if cfg["kind"] == "ann":
        return x, edge_index, model, ann_setup(cfg["model"], model, edge_index, x.shape[0])
    tw = T // 2 if cfg["kind"] == "snn-exact-tw" else T
    mode = "exact" if cfg["kind"].startswith("snn-exact") else "functional"
    calib = subgraph(x, edge_index, y, cfg["calib_nodes"])
    snn = convert(model, calib, PhaseCode(T, 1.3, Tw=tw), mode=mode)
    return x, edge_index, snn, GraphChain.from_model(snn, x, edge_index) if cfg.get("chain", True) else None


def run_config(cfg: dict) -> dict:
    t0 = time.perf_counter()
    x, edge_index, net, prepared = setup(cfg)
    del edge_index  # the operators are built: neither run reads the 2 GB edge list again
    setup_s, setup_peak = time.perf_counter() - t0, vm_hwm_mb()
    base = rss_mb()
    if cfg.get("budget_mb"):
        limit = vm_data_bytes() + int(cfg["budget_mb"] * 2**20)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    reset_peak()
    t0 = time.perf_counter()
    try:
        if cfg["kind"] == "ann":
            out = ann_layerwise(cfg["model"], net, x, prepared, cfg["chunk_size"])
        else:
            out = run_chain(prepared, FeatureSource(x, prepared.encoder), 0, x.shape[0], cfg["chunk_size"],
                            cfg.get("storage"))
    except (MemoryError, RuntimeError) as e:  # torch's allocator raises RuntimeError("... can't allocate memory")
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        return {"completed": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                "setup_s": setup_s, "base_rss_mb": base}
    sec = time.perf_counter() - t0
    from spikegcn.kernels import fused_cpu

    return {"completed": True, "seconds": sec, "fused_cpu_kernel": fused_cpu.load() is not None,
            "setup_s": setup_s, "setup_peak_rss_mb": setup_peak,
            "base_rss_mb": base, "peak_rss_mb": vm_hwm_mb(), "working_set_mb": vm_hwm_mb() - base,
            **_digest(out, cfg)}


def _digest(out: torch.Tensor, cfg: dict) -> dict:
    """SHA-256 of the output (bit-identity across runs); the predictions go to the cache for agreement."""
    import hashlib

    name = f"pred-{cfg['model']}-{cfg['kind']}{'-limited' if cfg.get('budget_mb') else ''}.npy"
    np.save(Path(cfg["cache"]) / name, out.argmax(1).numpy())
    return {"sha256": hashlib.sha256(out.contiguous().numpy().tobytes()).hexdigest()}


def _dist_worker(rank: int, world: int, port: int, cfg: dict, path: str) -> None:
    import torch.distributed as dist

    from spikegcn.distributed import inference, rank_chain

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for r in range(world):  # one rank at a time: the operator build's transient peak is not summed over ranks
            if r == rank:
                t0 = time.perf_counter()
                x, edge_index, snn, _ = setup(dict(cfg, kind="snn-functional", chain=False))
                chain = rank_chain(snn, x, edge_index)  # this rank's rows only; built once, like the other runs'
                del edge_index  # as in the other runs: the operators are built
                setup_s, setup_peak = time.perf_counter() - t0, vm_hwm_mb()
            dist.barrier()
        base = rss_mb()
        dist.barrier()
        reset_peak()
        best: dict = {}
        walls = []
        for _ in range(cfg.get("repeat", 1)):  # the same chain run again: the best wall time, its stage record
            dist.barrier()
            t0 = time.perf_counter()
            rec: dict = {}
            ids, out = inference(snn, x, None, chunk_size=cfg["chunk_size"], record=rec, chain=chain)
            sec = time.perf_counter() - t0
            dist.barrier()
            walls.append(time.perf_counter() - t0)
            if walls[-1] == min(walls):
                best = {"seconds": sec, "wall_s": walls[-1], "layers": rec["layers"]}
            del ids
        res = {"rank": rank, **best, "walls_s": walls, "setup_s": setup_s, "setup_peak_rss_mb": setup_peak,
               "base_rss_mb": base, "peak_rss_mb": vm_hwm_mb(), "nodes": [rec["lo"], rec["hi"]]}
        torch.save({"res": res, "out": out}, os.path.join(path, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_dist(cfg: dict) -> dict:
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_dist_worker, args=(cfg["world"], port, cfg, tmp), nprocs=cfg["world"], join=True)
        parts = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(cfg["world"])]
    out = torch.cat([p["out"] for p in parts])
    ranks = [p["res"] for p in parts]
    return {"completed": True, "seconds": max(r["wall_s"] for r in ranks), "ranks": ranks, **_digest(out, cfg)}


# ------------------------------------------------------------------ driver
def spawn(cfg: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(cfg)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=cfg.get("timeout", 3600))
    if p.returncode != 0:
        raise RuntimeError(f"configuration {cfg['kind']} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.05, help="fraction of ogbn-products' nodes and edges")
    ap.add_argument("--p-in", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=16384)
    ap.add_argument("--train-nodes", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--cache", default="/tmp/spikegcn-gcn_large")
    ap.add_argument("--models", default="gcn,sage")
    ap.add_argument("--kinds", default="ann,snn-functional,snn-exact,snn-exact-tw,dist1,dist2,limited")
    ap.add_argument("--out", default=None, help="default: results/gcn_large (scale 1), else results/gcn_large_scaleS")
    ap.add_argument("--repeat", type=int, default=1,
                    help="distributed runs: inference runs per process group (same chain); the best wall time counts")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        cfg = json.loads(args.worker)
        res = run_dist(cfg) if cfg["kind"].startswith("dist") else run_config(cfg)
        print(json.dumps(res))
        return
    if args.out is None:
        args.out = str(ROOT / "results" / ("gcn_large" if args.scale == 1 else f"gcn_large_scale{args.scale:g}"))
    cache = Path(args.cache) / f"scale{args.scale:g}-seed{args.seed}"
    t0 = time.perf_counter()
    info = generate(cache, args.scale, args.p_in, args.seed)
    gen_s = time.perf_counter() - t0
    print(f"graph: {info['nodes']:,} nodes, {info['undirected_edges']:,} undirected edges ({gen_s:.1f} s)", flush=True)
    x, edge_index, y = load_graph(cache)
    data = subgraph(x, edge_index, y, min(args.train_nodes, x.shape[0]))
    del x, edge_index
    record = {"date": str(date.today()), "command": " ".join(["python benchmarks/gcn_large.py"] + sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
              "full_size": PRODUCTS, "scale": args.scale, "graph": info, "chunk_size": args.chunk_size,
              "hidden": HIDDEN, "layers": LAYERS, "T": T, "Q": 1.3, "threads_per_process": 1, "models": {}}
    for name in args.models.split(","):
        state, acc = train(name, data, args.epochs)
        torch.save(state, cache / f"{name}.pt")
        runs = {}
        base = {"cache": str(cache), "model": name, "chunk_size": args.chunk_size, "calib_nodes": data.num_nodes}
        for kind in args.kinds.split(","):
            cfg = dict(base, kind=kind)
            if kind.startswith("dist"):
                cfg["world"], cfg["repeat"] = int(kind[4:]), args.repeat
            if kind == "limited":
                continue
            runs[kind] = spawn(cfg)
            print(name, kind, {k: v for k, v in runs[kind].items() if k in ("seconds", "peak_rss_mb")}, flush=True)
        if "limited" in args.kinds.split(","):
            runs.update(limited_runs(base, info["nodes"], cache))
        record["models"][name] = {"subgraph_test_accuracy": acc, "runs": runs, "summary": summarise(runs, cache, name)}
    record["full_size_estimate"] = estimate(record)
    write_json(args.out + ".json", record)
    write_text(args.out + ".md", to_markdown(record))
    print(to_markdown(record))


def limited_runs(base: dict, n: int, cache: Path) -> dict:
    """The SNN through ``storage`` with less private memory than one layer of float32 activations."""
    act_mb = n * HIDDEN * 4 / 2**20
    budget = round(0.5 * act_mb)
    out = {}
    for kind, storage in (("snn-functional", str(cache / "codes")), ("ann", None)):
        cfg = dict(base, kind=kind, budget_mb=budget, storage=storage, chunk_size=min(base["chunk_size"], 2048))
        r = spawn(cfg)
        r.update(budget_mb=budget, float_layer_mb=act_mb, chunk_size=cfg["chunk_size"],
                 limit="RLIMIT_DATA (ulimit -d) = VmData after setup + budget")
        out[f"limited-{kind}"] = r
        print(base["model"], "limited", kind, r.get("completed"), flush=True)
    return out


def summarise(runs: dict, cache: Path, name: str) -> dict:
    ann = runs.get("ann", {})
    s = {}
    for k in ("snn-functional", "snn-exact", "snn-exact-tw"):
        if k in runs and ann:
            s[k] = {"time_ratio": runs[k]["seconds"] / ann["seconds"],
                    "peak_ratio": runs[k]["peak_rss_mb"] / ann["peak_rss_mb"],
                    "working_set_ratio": runs[k]["working_set_mb"] / max(ann["working_set_mb"], 1e-9)}
    if "dist1" in runs and "dist2" in runs:
        d1, d2 = runs["dist1"], runs["dist2"]
        s["speedup_2_vs_1"] = d1["seconds"] / d2["seconds"]
        s["dist_bit_identical"] = d1["sha256"] == d2["sha256"]
        lw = runs.get("snn-functional")  # None: no layer-wise run in this run (--kinds)
        s["dist_equals_layerwise"] = None if lw is None else lw["sha256"] == d1["sha256"]
        s["bytes_per_layer"] = [sum(r["layers"][i]["code_bytes_sent"] for r in d2["ranks"])
                                for i in range(len(d2["ranks"][0]["layers"]))]
    for k in ("snn-functional", "snn-exact", "snn-exact-tw"):
        if k in runs and ann:
            pa, pb = np.load(cache / f"pred-{name}-ann.npy"), np.load(cache / f"pred-{name}-{k}.npy")
            s.setdefault("argmax_agreement_with_ann", {})[k] = float((pa == pb).mean())
    return s


def estimate(record: dict) -> dict:
    """Linear extrapolation (time, activation memory and graph size scale with nodes and edges)."""
    f = 1.0 / record["scale"]
    est = {"factor": f, "note": "linear in nodes/edges; measured at this scale x factor, one thread per process"}
    for name, m in record["models"].items():
        est[name] = {k: {"seconds": r["seconds"] * f, "peak_rss_gb": r.get("peak_rss_mb", float("nan")) * f / 1024}
                     for k, r in m["runs"].items() if r.get("completed") and "peak_rss_mb" in r}
    return est


def to_markdown(rec: dict) -> str:
    g = rec["graph"]
    lines = [f"# Large graphs: layer-wise and sharded inference ({rec['date']})", "",
             f"Synthetic ogbn-products-shaped graph at scale {rec['scale']:g}: {g['nodes']:,} nodes, "
             f"{g['undirected_edges']:,} undirected edges, 100 features, 47 classes ({g['communities']} communities); "
             f"3-layer models, hidden {rec['hidden']}, T = {rec['T']}, chunks of {rec['chunk_size']:,} nodes, one "
             f"thread per process. Command: `{rec['command']}`.", ""]
    for name, m in rec["models"].items():
        runs, s = m["runs"], m["summary"]
        lines += [f"## {name.upper()} (subgraph test accuracy of the ANN {m['subgraph_test_accuracy']:.3f})", ""]
        ann = runs.get("ann")
        rows = {k: r for k, r in runs.items() if r.get("completed") and "peak_rss_mb" in r}
        if rows:
            lines += ["| run | time (s) | x ANN | peak RSS (MB) | x ANN | working set (MB) | setup (s) |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
        for k, r in rows.items():
            tr = f"{r['seconds'] / ann['seconds']:.2f}" if ann else ""
            pr = f"{r['peak_rss_mb'] / ann['peak_rss_mb']:.2f}" if ann else ""
            lines.append(f"| {k} | {r['seconds']:.1f} | {tr} | {r['peak_rss_mb']:.0f} | {pr} | "
                         f"{r['working_set_mb']:.0f} | {r['setup_s']:.1f} |")
        if "speedup_2_vs_1" in s:
            d2 = runs["dist2"]
            peaks = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in d2["ranks"])
            lines += ["", f"Distributed (functional): 1 process {runs['dist1']['seconds']:.1f} s, 2 processes "
                      f"{d2['seconds']:.1f} s, speed-up {s['speedup_2_vs_1']:.2f}x; outputs bit-identical "
                      f"(1 vs 2: {s['dist_bit_identical']}, vs layer-wise: "
                      f"{'not run' if s['dist_equals_layerwise'] is None else s['dist_equals_layerwise']}); "
                      f"per-process peak RSS {peaks} MB; "
                      f"int8 code bytes exchanged per stage: {s['bytes_per_layer']}."]
            walls = {k: runs[k]["ranks"][0].get("walls_s") for k in ("dist1", "dist2")}
            if all(w and len(w) > 1 for w in walls.values()):  # --repeat: every run's wall time, the best counts
                lines.append(f"Best of {len(walls['dist1'])} runs of the same operators per process group; wall "
                             "times (s): " + "; ".join(f"{k}: " + ", ".join(f"{v:.1f}" for v in w)
                                                       for k, w in walls.items()) + ".")
            for label, d in (("1 process", runs["dist1"]), ("2 processes", d2)):
                if all("compute_s" in x for r in d["ranks"] for x in r["layers"]):  # records before 2026-12-02: none
                    per = "; ".join(f"rank {r['rank']}: " + ", ".join(
                        f"{x['exchange_s']:.1f} + {x['compute_s']:.1f}" for x in r["layers"]) for r in d["ranks"])
                    lines.append(f"Seconds per stage, exchange + rows, {label}: {per}.")
        for k in ("limited-snn-functional", "limited-ann"):
            if k in runs:
                r = runs[k]
                lines.append(f"\n{k}: budget {r['budget_mb']} MB over the setup's private memory ({r['limit']}), one "
                             f"float32 layer = {r['float_layer_mb']:.0f} MB: "
                             + ("completed in " + f"{r['seconds']:.1f} s" if r["completed"] else r["error"]))
        for k, v in s.get("argmax_agreement_with_ann", {}).items():
            lines.append(f"\n{k} and ANN predictions agree on {100 * v:.2f} % of the nodes.")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
