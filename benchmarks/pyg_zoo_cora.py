"""Every PyG model of the zoo converts on Cora: ANN accuracy, SNN accuracy (functional and exact), loss, spikes.

Each model is trained quickly (seeded, public split, NormalizeFeatures, Adam lr 0.01, weight decay 5e-4,
``--epochs`` epochs, the weights of the best validation epoch kept), converted with ``spikegcn.convert`` at
T = 16, Q = 1.3 (calibrated on the whole graph, as the ANN's forward sees it) and evaluated on the test nodes:

* ``functional``: the closed form (the round-off quantised ANN),
* ``exact`` at Tw = T (phase by phase; equal to functional by construction, measured here, not assumed),
* ``exact_tw4``: exact with a wait of 4 phases per layer (late and false spikes),
* spikes per hidden neuron (every neuron layer but the output).

Lambda is the max of each channel's activation or its 99.9th percentile, whichever gives the higher SNN accuracy on
the validation nodes (the max on a tie); the loss with the max alone is reported too.

    python benchmarks/pyg_zoo_cora.py [--epochs 200 --seed 0 --threads 2]

Writes results/pyg_zoo_cora.json and results/pyg_zoo_cora.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import (
    APPNP,
    ChebConv,
    GCN2Conv,
    GCNConv,
    GINConv,
    GraphConv,
    SAGEConv,
    SGConv,
    SimpleConv,
    TAGConv,
)
from torch_geometric.nn.models import GCN, GIN, MLP, GraphSAGE
from torch_geometric.transforms import NormalizeFeatures

import spikegcn
from spikegcn import PhaseCode
from spikegcn.fileio import write_json, write_text
from spikegcn.graphdata import load_planetoid

ROOT = Path(__file__).resolve().parents[1]


class Two(nn.Module):
    """PyG's examples/gcn.py shape: dropout on the input features, conv, ReLU, dropout, conv."""

    def __init__(self, first: nn.Module, second: nn.Module, p: float = 0.5):
        super().__init__()
        self.first, self.second, self.p = first, second, p

    def forward(self, x, edge_index):
        x = F.dropout(x, self.p, self.training)
        x = F.dropout(F.relu(self.first(x, edge_index)), self.p, self.training)
        return self.second(x, edge_index)


class AppnpNet(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.lin1, self.lin2, self.prop = nn.Linear(i, h), nn.Linear(h, o), APPNP(K=10, alpha=0.1)

    def forward(self, x, edge_index):
        x = F.dropout(x, 0.5, self.training)
        x = F.dropout(F.relu(self.lin1(x)), 0.5, self.training)
        return self.prop(self.lin2(x), edge_index)


class Gcn2Net(nn.Module):
    def __init__(self, i, h, o, layers=4):
        super().__init__()
        self.lin0, self.lin1 = nn.Linear(i, h), nn.Linear(h, o)
        self.convs = nn.ModuleList([GCN2Conv(h, alpha=0.1, theta=0.5, layer=k + 1) for k in range(layers)])

    def forward(self, x, edge_index):
        x = F.dropout(x, 0.6, self.training)
        x = x0 = F.relu(self.lin0(x))
        for conv in self.convs:
            x = F.dropout(x, 0.6, self.training)
            x = F.relu(conv(x, x0, edge_index))
        return self.lin1(F.dropout(x, 0.6, self.training))


class SimpleNet(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.lin, self.prop, self.out = nn.Linear(i, h), SimpleConv(aggr="mean", combine_root="sum"), nn.Linear(h, o)

    def forward(self, x, edge_index):
        x = F.dropout(F.relu(self.lin(F.dropout(x, 0.5, self.training))), 0.5, self.training)
        return self.out(F.relu(self.prop(x, edge_index)))


class FeatureMLP(nn.Module):
    """PyG's MLP on the node features (the graph is ignored)."""

    def __init__(self, i, h, o):
        super().__init__()
        self.mlp = MLP([i, h, o], dropout=0.5, norm=None)

    def forward(self, x, edge_index):
        return self.mlp(x)


def zoo(i: int, o: int) -> dict:
    return {
        "GCNConv (examples/gcn.py)": lambda: Two(GCNConv(i, 16), GCNConv(16, o)),
        "GCN": lambda: GCN(i, 64, 2, o, dropout=0.5),
        "GCN batch_norm": lambda: GCN(i, 64, 2, o, dropout=0.5, norm="batch_norm"),
        "GCN jk=cat": lambda: GCN(i, 64, 2, o, dropout=0.5, jk="cat"),
        "GraphSAGE": lambda: GraphSAGE(i, 64, 2, o, dropout=0.5),
        "SAGEConv max": lambda: Two(SAGEConv(i, 64, aggr="max"), SAGEConv(64, o, aggr="max")),
        "SAGEConv sum, no root": lambda: Two(SAGEConv(i, 64, aggr="sum", root_weight=False), SAGEConv(64, o)),
        "GIN": lambda: GIN(i, 64, 2, o, dropout=0.5),
        "GINConv": lambda: Two(GINConv(nn.Sequential(nn.Linear(i, 64), nn.ReLU(), nn.Linear(64, 64))),
                               GINConv(nn.Linear(64, o))),
        "MLP": lambda: FeatureMLP(i, 64, o),
        "GraphConv": lambda: Two(GraphConv(i, 64, aggr="mean"), GraphConv(64, o, aggr="mean")),
        "SGConv": lambda: Two(SGConv(i, 64, K=2), SGConv(64, o, K=1)),
        "ChebConv": lambda: Two(ChebConv(i, 32, K=2), ChebConv(32, o, K=2)),
        "TAGConv": lambda: Two(TAGConv(i, 64, K=2), TAGConv(64, o, K=2)),
        "APPNP": lambda: AppnpNet(i, 64, o),
        "GCN2Conv": lambda: Gcn2Net(i, 64, o),
        "SimpleConv": lambda: SimpleNet(i, 64, o),
    }


def train(model: nn.Module, data, epochs: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    best, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask]).backward()
        opt.step()
        val = accuracy(model.eval(), data, data.val_mask)
        if val > best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data, mask) -> float:
    return float((model(data.x, data.edge_index).argmax(1)[mask] == data.y[mask]).float().mean())


def spikes_per_neuron(snn) -> float:
    stats = [s for s in snn.layer_stats() if s.out_neurons]
    return sum(s.out_spikes for s in stats) / max(1, sum(s.out_neurons for s in stats))


def measure(name: str, make, data, args) -> dict:
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = train(make(), data, args.epochs)
    row = {"model": name, "ann": accuracy(model, data, data.test_mask), "train_s": time.perf_counter() - t0}
    code = PhaseCode(args.T, args.Q)
    # lambda rule chosen on the validation nodes: the max, or the 99.9th percentile (ties keep the max)
    snns = {p: spikegcn.convert(model, data, code, mode="functional", percentile=p) for p in (None, 99.9)}
    val = {p: accuracy(s, data, data.val_mask) for p, s in snns.items()}
    pct = 99.9 if val[99.9] > val[None] else None
    row["lambda"] = "max" if pct is None else "p99.9"
    row["functional_max"] = accuracy(snns[None], data, data.test_mask)
    row["functional"] = accuracy(snns[pct], data, data.test_mask)
    for key, c in (("exact", code), ("exact_tw4", code.replace(Tw=4))):
        snn = spikegcn.convert(model, data, c, mode="exact", percentile=pct)
        row[key] = accuracy(snn, data, data.test_mask)
        if key == "exact":
            row["spikes_per_neuron"] = spikes_per_neuron(snn)
    row["loss_pp"] = 100 * (row["ann"] - row["exact"])
    row["loss_max_pp"] = 100 * (row["ann"] - row["functional_max"])
    return row


def markdown(rows: list[dict], args, meta: dict) -> str:
    lines = [f"# PyG zoo on Cora (T = {args.T}, Q = {args.Q}, public split, seed {args.seed}, {args.epochs} epochs)",
             "", "Written by `python benchmarks/pyg_zoo_cora.py`. Accuracies in % on the 1,000 test nodes; loss = "
             "ANN - SNN (exact, Tw = T) in percentage points.", "",
             "Commands: " + "; ".join(f"`{c}`" for c in meta["commands"]), "",
             "| model | ANN | lambda | SNN functional | SNN exact (Tw = T) | loss (pp) | loss, lambda = max (pp) | "
             "SNN exact (Tw = 4) | spikes / neuron |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {100 * r['ann']:.1f} | {r['lambda']} | {100 * r['functional']:.1f} | "
                     f"{100 * r['exact']:.1f} | {r['loss_pp']:+.1f} | {r['loss_max_pp']:+.1f} | "
                     f"{100 * r['exact_tw4']:.1f} | {r['spikes_per_neuron']:.3f} |")
    worst = max(r["loss_pp"] for r in rows)
    lines += ["", f"Largest loss: {worst:+.1f} pp (target: at most 1 pp)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--T", type=int, default=16)
    p.add_argument("--Q", type=float, default=1.3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", help="model names to run (default: all)")
    p.add_argument("--merge", action="store_true", help="replace only these models' rows in an existing record")
    p.add_argument("--out", default=str(ROOT / "results" / "pyg_zoo_cora"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_planetoid("Cora", transform=NormalizeFeatures())[0]
    rows = []
    for name, make in zoo(data.num_features, int(data.y.max()) + 1).items():
        if args.only and name not in args.only:
            continue
        rows.append(measure(name, make, data, args))
        r = rows[-1]
        print(f"{name:28s} ANN {100 * r['ann']:.1f}  SNN {100 * r['exact']:.1f} ({r['lambda']})  "
              f"loss {r['loss_pp']:+.1f} pp (max: {r['loss_max_pp']:+.1f})  "
              f"Tw=4 {100 * r['exact_tw4']:.1f}  s/n {r['spikes_per_neuron']:.3f}", flush=True)
    meta = {"T": args.T, "Q": args.Q, "seed": args.seed, "epochs": args.epochs, "torch": torch.__version__,
            "python": platform.python_version(), "commands": [" ".join(["python"] + sys.argv)]}
    if args.merge:
        old = json.loads(Path(args.out + ".json").read_text())
        new = {r["model"]: r for r in rows}
        rows = [new.pop(r["model"], r) for r in old["rows"]] + list(new.values())
        meta["commands"] = old["meta"].get("commands", [old["meta"].get("command")]) + meta["commands"]
    write_json(args.out + ".json", {"meta": meta, "rows": rows})
    write_text(args.out + ".md", markdown(rows, args, meta))


if __name__ == "__main__":
    main()
