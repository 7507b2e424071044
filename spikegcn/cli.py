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


def cmd_cnn(args: argparse.Namespace) -> int:
    import json

    import torch

    from .vision.pipeline import run_cnn, summary_table

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rec = run_cnn(args.model, args.dataset, weights=args.weights, T=args.T, Q=args.Q, Tw=args.Tw,
                      limit=args.limit, calib=args.calib, seed=args.seed, modes=tuple(args.modes))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    c = rec["code"]
    path = out / f"{rec['model']}_{rec['dataset']}_T{c['T']}_Q{c['Q']:g}_Tw{c['Tw']}_seed{rec['seed']}.json"
    path.write_text(json.dumps(rec, indent=2))
    print(summary_table(rec))
    print(f"\nrecord: {path}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    import torch

    from .coding import PhaseCode
    from .vision.train import finetune

    try:
        code = PhaseCode(*args.fake_quant) if args.fake_quant else None  # PhaseCode validates T and Q
    except ValueError as exc:
        raise SystemExit(f"error: --fake-quant {exc}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        res = finetune(args.model, args.out, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                       batch_size=args.batch_size, label_smoothing=args.label_smoothing, seed=args.seed,
                       activation_noise=args.activation_noise, fake_quant=code,
                       fake_quant_window=args.fq_window, freeze_bn=args.freeze_bn, init=args.init,
                       progress=not args.quiet)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{res['arch']}: JPEG test accuracy {100 * res['acc_before']:.2f}% -> {100 * res['acc_after']:.2f}%, "
          f"checkpoint {res['checkpoint']}")
    return 0


def cmd_mape(args: argparse.Namespace) -> int:
    from .sweep import flatten, mape_curves, parse_grid, write_mape

    Qs = flatten(args.Q) or parse_grid("1.01:2.00:0.01", name="--Q")
    rec = mape_curves(flatten(args.T), Qs, mu=args.mu, sigma=args.sigma, shift=not args.no_shift,
                      progress=not args.quiet)
    rec["command"] = "spikegcn " + " ".join(args.argv)
    jpath, ppath = write_mape(rec, args.out)
    for T, opt in rec["optimum"].items():
        print(f"T = {T}: optimal Q = {opt['Q']:g} (MAPE {opt['mape_percent']:.2f} %) on "
              f"{len(rec['Q'])} values of Q in [{rec['Q'][0]:g}, {rec['Q'][-1]:g}]")
    print(f"curves: {jpath}\nfigure: {ppath}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import torch

    from .sweep import TASKS, _cnn_available, flatten, grid_points, run_sweep, summarize_sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    Ts, Qs, Tws = flatten(args.T), flatten(args.Q), flatten(args.Tw)
    if args.task == "textgcn":
        if not args.dataset:
            raise SystemExit("error: --task textgcn needs --dataset (20ng, R8, R52, ohsumed, mr or demo)")
        name = args.dataset
        task_config = {"dataset": args.dataset, "seed": args.seed}
        make = lambda: TASKS["textgcn"](args.dataset, seed=args.seed, progress=not args.quiet,  # noqa: E731
                                        model_cache=not args.no_model_cache)
    else:
        if not _cnn_available():
            raise SystemExit("error: CNN sweeps need the CNN converter (spikegcn.convert.convert_cnn), which this "
                             "installation does not have")
        name = args.model
        task_config = {"model": args.model, "seed": args.seed, "limit": args.limit, "calib": args.calib}
        make = lambda: TASKS["cnn"](args.model, seed=args.seed, limit=args.limit, calib=args.calib,  # noqa: E731
                                    progress=not args.quiet)
    out = args.out or f"results/sweep_{args.task}_{name}.json"
    try:
        rec, computed = run_sweep(out, args.task, task_config, grid_points(Ts, Qs, Tws), make,
                                  shift=not args.no_shift, progress=not args.quiet,
                                  command="spikegcn " + " ".join(args.argv))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise SystemExit(f"error: {exc}") from None
    n = len(grid_points(Ts, Qs, Tws))
    print(f"{len(computed)} of {n} grid points computed now, {n - len(computed)} already in {out}")
    from .sweep import point_key

    print(summarize_sweep(rec, [point_key(*p) for p in grid_points(Ts, Qs, Tws)]))
    print(f"\nrecord: {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    try:
        path = build_report(args.results, args.out)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"report: {path}")
    for line in path.read_text().splitlines():
        if line.startswith("- `") and line.endswith(".png`"):
            print(f"figure: {path.parent / line[3:-1]}")
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

    c = sub.add_parser("cnn", help="convert a trained CNN (CIFAR ResNet, VGG-style, LeNet-5) and evaluate it")
    c.add_argument("--model", required=True, help="resnet20/32/44/56 (published weights), vgg_cifar or lenet5")
    c.add_argument("--dataset", default="cifar10", choices=["cifar10", "mnist"])
    c.add_argument("--weights", default=None, help="checkpoint path (default: the published ResNet weights)")
    c.add_argument("--T", type=int, default=16, help="phases per window (default 16)")
    c.add_argument("--Q", type=float, default=1.3, help="coding base (default 1.3)")
    c.add_argument("--Tw", type=int, default=None, help="wait time (default T)")
    c.add_argument("--limit", type=int, default=1000, help="test images, evenly spaced (0 = all; default 1000)")
    c.add_argument("--calib", type=int, default=1000, help="random training images for lambda (default 1000)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--modes", nargs="+", default=["functional", "exact"], choices=["functional", "exact"])
    c.add_argument("--out", default="results/cnn", help="folder of the JSON records")
    c.add_argument("--threads", type=int, default=None)
    c.set_defaults(func=cmd_cnn)

    f = sub.add_parser("finetune", help="fine-tune a pretrained CIFAR ResNet on the CIFAR-10 JPEG training set")
    f.add_argument("model", nargs="?", default="resnet20", choices=["resnet20", "resnet32", "resnet44", "resnet56"])
    f.add_argument("--out", default=None, help="checkpoint (default: cache_dir()/checkpoints/<model>-jpg-ft.pt)")
    f.add_argument("--epochs", type=int, default=5)
    f.add_argument("--lr", type=float, default=0.01)
    f.add_argument("--weight-decay", type=float, default=1e-4)
    f.add_argument("--batch-size", type=int, default=128)
    f.add_argument("--label-smoothing", type=float, default=0.0)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--activation-noise", type=float, default=0.0, metavar="A",
                   help="conversion-aware training: multiply each ReLU output by 1 + U(-A, A); (Q-1)/(Q+1) = 0.13 "
                        "matches the round-off of Q = 1.3 (default 0: plain fine-tuning; checkpoint tag jpg-ft-an<A>)")
    f.add_argument("--fake-quant", nargs=2, type=float, metavar=("T", "Q"), default=None,
                   help="conversion-aware training through the one-spike code itself (straight-through "
                        "gradients), e.g. --fake-quant 16 1.3; checkpoint tag jpg-ft-fq<T>-<Q>")
    f.add_argument("--fq-window", type=int, default=1, metavar="N",
                   help="with --fake-quant: scale = maximum over the last N batches (about the converter's "
                        "calibration set at N = 16) and average pools quantised too; tag suffix -w<N> (default 1)")
    f.add_argument("--freeze-bn", action="store_true",
                   help="batch-norm layers in eval mode while training (tag suffix -fbn)")
    f.add_argument("--init", default=None, help="start from this checkpoint instead of the published weights")
    f.add_argument("--threads", type=int, default=None)
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=cmd_finetune)

    from .sweep import grid_type

    m = sub.add_parser("mape", help="Eq. 5 MAPE curves over Q, their optima, a Fig. 6-style plot")
    m.add_argument("--T", nargs="+", type=grid_type(True, "--T", 1), required=True,
                   help="window lengths, e.g. 16 24 (numbers or start:stop:step)")
    m.add_argument("--Q", nargs="+", type=grid_type(False, "--Q", 1.0, strict=True), default=None,
                   help="bases, numbers or start:stop:step ranges (default 1.01:2.00:0.01)")
    m.add_argument("--mu", type=float, default=0.0, help="mean of the Gaussian activations (default 0)")
    m.add_argument("--sigma", type=float, default=1.0, help="std of the Gaussian activations (default 1)")
    m.add_argument("--no-shift", action="store_true", help="floor encoding (Eq. 3) instead of round-off")
    m.add_argument("--out", default="results/mape", help="writes <out>.json and <out>.png (default results/mape)")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_mape)

    s = sub.add_parser("sweep", help="grid sweep of T, Q (and Tw) on one trained network; resumable")
    s.add_argument("--task", choices=["textgcn", "cnn"], default="textgcn")
    s.add_argument("--dataset", help="Text GCN dataset: 20ng, R8, R52, ohsumed, mr or demo")
    s.add_argument("--model", default="resnet20", choices=["resnet20", "vgg", "lenet5"], help="CNN (--task cnn)")
    s.add_argument("--T", nargs="+", type=grid_type(True, "--T", 1), required=True,
                   help="window lengths: numbers or start:stop:step ranges, e.g. 8 12 16 24")
    s.add_argument("--Q", nargs="+", type=grid_type(False, "--Q", 1.0, strict=True), required=True,
                   help="bases: numbers or start:stop:step ranges, e.g. 1.1:2.0:0.1")
    s.add_argument("--Tw", nargs="+", type=grid_type(True, "--Tw", 0), default=None,
                   help="wait times (default Tw = T: functional mode); Tw < T runs the exact mode")
    s.add_argument("--seed", type=int, default=0, help="seed of the split and training (default 0)")
    s.add_argument("--limit", type=int, default=1000, help="CNN test images, evenly spaced (0 = all; default 1000)")
    s.add_argument("--calib", type=int, default=2000, help="CNN calibration images (default 2000)")
    s.add_argument("--no-shift", action="store_true", help="floor encoding (no threshold shift)")
    s.add_argument("--no-model-cache", action="store_true",
                   help="always train the Text GCN (default: reuse the model a previous sweep cached)")
    s.add_argument("--out", help="results file (default results/sweep_<task>_<dataset or model>.json)")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("report", help="CNN vs GCN report (markdown + figures) from the results records")
    r.add_argument("--results", default="results", help="folder of the results records (default results)")
    r.add_argument("--out", default=None, help="report file (default <results>/report.md); figures go next to it")
    r.set_defaults(func=cmd_report)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
