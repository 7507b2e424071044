"""Text GCN training time: ``train_textgcn`` against the plain loop, in one run on the same graph.

The plain loop is the textbook one: ``GCNConv`` layers on the torch sparse CSR Â (autograd builds Â^T, a sort of
all non-zeros, in the backward pass of each layer), then a second full forward pass for the validation loss.
``train_textgcn`` uses ``SymmetricGCNConv`` (the backward multiplies by Â again, which is symmetric) and computes
each epoch's layer-1 output once for the validation of the updated model and the next training step. Both run
``--epochs`` epochs from the same seed with early stopping off; the script checks that the two give the same
losses and weights (bit for bit) and reports the time ratio.

    python benchmarks/textgcn_train_speed.py [--datasets 20ng R8] [--epochs 10]

Writes results/textgcn_train_speed.json and results/textgcn_train_speed.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv

from spikegcn.experiments.textgcn_train import TrainConfig, set_tf_adam_eps, setup_training, train_textgcn
from spikegcn.fileio import write_json, write_text
from spikegcn.text.graph import build_text_graph


def plain_loop(graph, cfg: TrainConfig):
    """The plain loop with plain ``GCNConv`` layers; returns ``(model, history)``."""
    model, x, adj, y, tr, va = setup_training(graph, cfg)
    rng = torch.get_rng_state()  # the GCNConv constructors below draw their own init: keep dropout's stream
    for name in ("conv1", "conv2"):  # same parameters (already Glorot-initialised), GCNConv's own backward
        sym = getattr(model, name)
        conv = GCNConv(sym.in_channels, sym.out_channels, bias=False, normalize=False)
        conv.load_state_dict(sym.state_dict())
        setattr(model, name, conv)
    torch.set_rng_state(rng)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    hist = []
    for epoch in range(cfg.epochs):
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(x, adj)[tr], y[tr])
        loss.backward()
        if cfg.tf_adam_eps:
            set_tf_adam_eps(opt, epoch + 1)
        opt.step()
        model.eval()
        with torch.no_grad():
            vl = float(F.cross_entropy(model(x, adj)[va], y[va]))
        hist.append((loss.item(), vl))
    return model, hist


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["20ng", "R8"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/textgcn_train_speed")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, early_stopping=args.epochs, seed=0)
    res = {"epochs": args.epochs, "machine": f"{platform.machine()} {args.threads} threads",
           "torch": torch.__version__, "date": date.today().isoformat(), "runs": {},
           "command": "python benchmarks/textgcn_train_speed.py "
                      + " ".join(argv if argv is not None else sys.argv[1:])}
    for ds in args.datasets:
        g = build_text_graph(ds, seed=0, progress=False)
        t0 = time.perf_counter()
        ref, ref_hist = plain_loop(g, cfg)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, _, _, hist = train_textgcn(g, cfg, progress=False)
        t_new = time.perf_counter() - t0
        same = [(h["train_loss"], h["val_loss"]) for h in hist] == ref_hist and all(
            torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))
        res["runs"][g.name] = {"nodes": g.n_nodes, "nnz": g.nnz, "plain_s_per_epoch": t_plain / args.epochs,
                               "train_textgcn_s_per_epoch": t_new / args.epochs, "ratio": t_new / t_plain,
                               "identical": same}
        print(f"{g.name}: plain {t_plain / args.epochs:.2f} s/epoch, train_textgcn {t_new / args.epochs:.2f} s/epoch "
              f"(ratio {t_new / t_plain:.2f}), identical: {same}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), res, indent=2)
    L = [f"# Text GCN training time ({res['epochs']} epochs, early stopping off)", "",
         f"{res['machine']}, torch {res['torch']}, {res['date']}. Command: `{res['command'].strip()}`. Both loops run "
         "in the same process, one after the other, from seed 0.", "",
         "| dataset | nodes | nnz(Â) | plain loop s/epoch | train_textgcn s/epoch | time ratio "
         "| same losses and weights |",
         "|---|---:|---:|---:|---:|---:|---|"]
    for ds, r in res["runs"].items():
        L.append(f"| {ds} | {r['nodes']:,} | {r['nnz']:,} | {r['plain_s_per_epoch']:.2f} | "
                 f"{r['train_textgcn_s_per_epoch']:.2f} | {r['ratio']:.2f} | {'yes' if r['identical'] else 'NO'} |")
    write_text(out.with_suffix(".md"), "\n".join(L) + "\n")


if __name__ == "__main__":
    main()
