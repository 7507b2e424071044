"""Why GIN + global_add_pool agrees less with its ANN than GCN + global_mean_pool: the head's range.

For the 10-fold GIN-add models of ``benchmarks/graph_benchmarks.py`` (same folds, seeds and cached weights; trained
here when the cache is empty), converted at T = 16, Q = 1.3 (lambda = max, functional mode), this measures the
ANN/SNN prediction agreement on the test folds with

* ``T16``: the benchmark's code on every layer;
* ``head T24``: T = 24 on the graph-level layer only (the add pool fused with the head's first Linear);
* ``nodes T24``: T = 24 on the node-level layers only;
* ``T64``: T = 64 on every layer (Q = 1.3: the same rounding, no underflow in practice);
* ``fine``: T = 600, Q = 1.02 on every layer (rounding within 1 %);
* ``one layer``: the fine code everywhere but one layer at T = 16, Q = 1.3; the worst such layer over all folds;
* ``refit``: T = 16 everywhere after ``spikegcn.reconstruct`` (ridge 1e-4, lambda = max) on the training graphs;

and, for ``T16``, the sizes and ANN logit margins of the graphs whose predictions disagree. The input encoder keeps
T = 16 in every setting. The sums over a graph's nodes grow with its size; lambda is set by the largest training
graphs, and a graph about Q^(T-1) times smaller falls below the last phase.

    python benchmarks/gin_pool_range.py [--datasets MUTAG PROTEINS]

Writes results/gin_pool_range.{json,md}.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import graph_benchmarks as gb  # noqa: E402

from spikegcn import PhaseCode, convert  # noqa: E402
from spikegcn.fileio import write_json, write_text  # noqa: E402
from spikegcn.nn.global_pool import SpikingGlobalPool  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("T16", "head T24", "nodes T24", "T64", "fine")
COLUMNS = (*SETTINGS, "one layer", "refit")
FINE = PhaseCode(600, 1.02)


def fold_run(name: str, fold: int, stats: dict) -> None:
    ds = gb.load_tudataset(name)
    train, val, test = gb.kfold_splits(ds.y, folds=10, seed=0)[fold]
    r = gb.GRAPH_RECIPES[name]
    torch.manual_seed(fold)
    model = gb.GraphNet(*gb.GRAPH_MODELS["gin-add"], ds.num_features, r.hidden, ds.num_classes, r.dropout)
    gb._cached(model, gb._weights_path(f"{name}-10fold-gin-add", r, fold),
               lambda: gb.train_graph(model, ds, train, val, r, fold))
    model.eval()
    tb, calib = gb._one_batch(ds, test), gb._one_batch(ds, train)
    with torch.no_grad():
        logits = model(tb.x, tb.edge_index, tb.batch)
        snn = convert(model, calib, PhaseCode(16, 1.3), mode="functional")
        layers = snn.spiking_layers()
        heads = [m for _, m in layers if isinstance(m, SpikingGlobalPool)]
        if len(heads) != 1 or heads[0].weight is None:
            raise RuntimeError("expected the add pool fused with the head's first Linear as one layer")
        for setting in SETTINGS:
            for _, m in layers:
                graph_level = m is heads[0] or m.output == "potential"
                big = (setting == "head T24" and graph_level) or (setting == "nodes T24" and not graph_level)
                m.code = {"T64": PhaseCode(64, 1.3), "fine": FINE}.get(setting, PhaseCode(24 if big else 16, 1.3))
            bad = snn(tb.x, tb.edge_index, tb.batch).argmax(1) != logits.argmax(1)
            stats[setting]["agree"] += int((~bad).sum())
            if setting == "T16":
                size = torch.bincount(tb.batch, minlength=tb.num_graphs)
                top2 = logits.topk(2, dim=1).values
                margin = top2[:, 0] - top2[:, 1]
                stats["sizes_all"] += size.tolist()
                stats["sizes_bad"] += size[bad].tolist()
                stats["margin_all"] += margin.tolist()
                stats["margin_bad"] += margin[bad].tolist()
        agree_one = stats.setdefault("one layer per layer", [0] * len(layers))
        for j in range(len(layers)):
            for i, (_, m) in enumerate(layers):
                m.code = PhaseCode(16, 1.3) if i == j else FINE
            agree_one[j] += int((snn(tb.x, tb.edge_index, tb.batch).argmax(1) == logits.argmax(1)).sum())
        refit = convert(model, calib, PhaseCode(16, 1.3), mode="functional", reconstruct=1e-4)
        stats["refit"]["agree"] += int((refit(tb.x, tb.edge_index, tb.batch).argmax(1) == logits.argmax(1)).sum())
    stats["graphs"] += tb.num_graphs


def dataset_record(name: str) -> dict:
    stats: dict = {s: {"agree": 0} for s in (*SETTINGS, "refit")}
    stats.update(graphs=0, sizes_all=[], sizes_bad=[], margin_all=[], margin_bad=[])
    for fold in range(10):
        fold_run(name, fold, stats)
    med = lambda v: statistics.median(v) if v else None  # noqa: E731
    return {"dataset": name, "graphs": stats["graphs"],
            "agreement": {**{s: 100.0 * stats[s]["agree"] / stats["graphs"] for s in (*SETTINGS, "refit")},
                          "one layer": 100.0 * min(stats["one layer per layer"]) / stats["graphs"]},
            "one_layer_agreement": [100.0 * a / stats["graphs"] for a in stats["one layer per layer"]],
            "median_size": {"all": med(stats["sizes_all"]), "disagreeing": med(stats["sizes_bad"])},
            "size_range": [min(stats["sizes_all"]), max(stats["sizes_all"])],
            "median_margin": {"all": med(stats["margin_all"]), "disagreeing": med(stats["margin_bad"])},
            "disagreeing_sizes": sorted(stats["sizes_bad"])}


def write_md(rows: list[dict], path: Path, command: str) -> None:
    lines = ["# GIN + global_add_pool: agreement against the head's phase range", "",
             f"`{command}`, {date.today().isoformat()}. GIN-add models of `benchmarks/graph_benchmarks.py` (10 folds), "
             "functional mode, Q = 1.3, lambda = max; agreement = % of test graphs whose SNN prediction equals the "
             "ANN's. Margin: the ANN's top-1 minus top-2 logit. Columns: see the script's docstring (`one layer`: "
             "the worst layer rounded alone; `refit`: spikegcn.reconstruct, ridge 1e-4).", "",
             "| dataset | graphs (sizes) | " + " | ".join(COLUMNS) + " | median size: all / disagreeing | "
             "median margin: all / disagreeing |", "|---" * (len(COLUMNS) + 4) + "|"]
    for r in rows:
        a, s, m = r["agreement"], r["median_size"], r["median_margin"]
        dis = f"{m['disagreeing']:.2f}" if m["disagreeing"] is not None else "n/a"
        dis_size = s["disagreeing"] if s["disagreeing"] is not None else "n/a"
        lines.append(f"| {r['dataset']} | {r['graphs']} ({r['size_range'][0]}-{r['size_range'][1]}) | "
                     + " | ".join(f"{a[c]:.2f}" for c in COLUMNS) + f" | {s['all']} / {dis_size} | "
                     f"{m['all']:.2f} / {dis} |")
    write_text(path, "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["MUTAG", "PROTEINS"], choices=["MUTAG", "PROTEINS"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "gin_pool_range")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    command = "python benchmarks/gin_pool_range.py " + " ".join(sys.argv[1:])
    rows = [dataset_record(d) for d in args.datasets]
    write_json(args.out.with_suffix(".json"), {"command": command.strip(), "date": date.today().isoformat(),
                                               "records": rows})
    write_md(rows, args.out.with_suffix(".md"), command.strip())
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
