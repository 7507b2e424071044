"""Command line: ``spikegcn textgcn ...``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def _load_config(path: str | None) -> dict:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"config file {p} not found")
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SystemExit(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise SystemExit(f"config file {p} must hold a mapping, got {type(cfg).__name__}")
    return cfg


def cmd_textgcn(args: argparse.Namespace) -> int:
    import torch

    from .text.pipeline import run_textgcn, summary_table, write_record

    cfg = _load_config(args.config)
    known = {"dataset", "T", "Q", "Tw", "seed", "train", "modes"}
    unknown = set(cfg) - known
    if unknown:
        raise SystemExit(f"config {args.config}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    # command line overrides the config file
    dataset = args.dataset or cfg.get("dataset")
    if not dataset:
        raise SystemExit("no dataset: pass --dataset or a config with 'dataset'")
    T = args.T if args.T is not None else cfg.get("T", 16)
    Q = args.Q if args.Q is not None else cfg.get("Q", 1.3)
    Tw = args.Tw if args.Tw is not None else cfg.get("Tw")
    seed = args.seed if args.seed is not None else cfg.get("seed", 0)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rec = run_textgcn(dataset, T=T, Q=Q, Tw=Tw, seed=seed, train=cfg.get("train"),
                          modes=tuple(cfg.get("modes", ("functional", "exact"))), progress=not args.quiet)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    path = write_record(rec, args.out)
    print(summary_table(rec))
    print(f"\nrecord: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spikegcn", description="One-spike SNN conversion of GCNs and CNNs")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("textgcn", help="train Text GCN, convert it to a one-spike SNN, evaluate")
    t.add_argument("--dataset", help="20ng, R8, R52, ohsumed, mr or demo (any case)")
    t.add_argument("--T", type=int, help="phases per window (default 16)")
    t.add_argument("--Q", type=float, help="coding base (default 1.3)")
    t.add_argument("--Tw", type=int, help="wait time (default T)")
    t.add_argument("--seed", type=int, help="seed of the split and training (default 0)")
    t.add_argument("--config", help="YAML config (configs/textgcn/<ds>.yaml); flags override it")
    t.add_argument("--out", default="results/textgcn", help="folder of the JSON records")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_textgcn)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
