"""The bodies of the ``spikegcn`` subcommands: check everything a run needs, then import the pipelines and run.

Each command validates its arguments, config and output paths first (:class:`UsageError` for what the user can
fix), so that a bad value fails in a second, not after a graph build or a training run.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from . import CNN_INPUTS, IMAGE_DATASETS, RUNS, TEXT_DATASETS

log = logging.getLogger("spikegcn.cli")


class UsageError(ValueError):
    """A user error found before any work: shown as one line, exit code 2."""


# ------------------------------------------------------------------------------------------------ output paths
def out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """A folder the records go into: created now, refused if it is a file or cannot be written."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {p} is a file; give a folder (the records are written inside it)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {p}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {p}: the folder is not writable")
    return p


def out_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """A file to write: refused if it is a folder or its folder cannot be created or written."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{flag} {p} is a folder; give a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{flag} {p}: the file is not writable")
    out_dir(p.parent, flag=f"{flag} {p}: folder")
    return p


def in_file(path: str | os.PathLike | None, flag: str) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{flag} {p}: {'is a folder, not a file' if p.is_dir() else 'no such file'}")
    return p


# ------------------------------------------------------------------------------------------------ shared steps
def _phase_code(T: Any, Q: Any, Tw: Any):
    from ..coding import PhaseCode

    try:
        return PhaseCode(T, Q, Tw=Tw)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _prepare_torch(args: argparse.Namespace) -> None:
    """Threads, and the compiled kernels loaded (or their absence noted) before anything is timed."""
    import torch

    from ..kernels import fused_cpu

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    fused_cpu.load()


def _image_dataset(model: str, dataset: str | None) -> str:
    kind = CNN_INPUTS[model]
    if dataset is None:
        return "mnist" if kind == "mnist" else "cifar10"
    if IMAGE_DATASETS[dataset] != kind:
        takes = [d for d, k in IMAGE_DATASETS.items() if k == kind]
        raise UsageError(f"{model} takes {'28x28 MNIST digits' if kind == 'mnist' else '32x32 CIFAR images'}, not "
                         f"--dataset {dataset}; use --dataset {' or '.join(takes)}")
    return dataset


def _record_name(rec: dict, prefix: str) -> str:
    c = rec["code"]
    return f"{prefix}_T{c['T']}_Q{c['Q']:g}_Tw{c['Tw']}_seed{rec['seed']}.json"


# ------------------------------------------------------------------------------------------------ commands
def textgcn(args: argparse.Namespace) -> int:
    from ..config import TEXTGCN_SCHEMA, load_config

    cfg = load_config(args.config, TEXTGCN_SCHEMA) if args.config else {}
    dataset = args.dataset or cfg.get("dataset")
    if not dataset:
        raise UsageError(f"no dataset: pass --dataset ({TEXT_DATASETS}) or a config with 'dataset'")
    from ..text.corpus import canonical_name

    dataset = canonical_name(dataset)  # an unknown name fails here, before torch and the graph build
    T = args.T if args.T is not None else cfg.get("T", 16)
    Q = args.Q if args.Q is not None else cfg.get("Q", 1.3)
    Tw = args.Tw if args.Tw is not None else cfg.get("Tw")
    seed = args.seed if args.seed is not None else cfg.get("seed", 0)
    code = _phase_code(T, Q, Tw)
    out = out_dir(args.out)
    _prepare_torch(args)
    from ..experiments.textgcn import run_textgcn, summary_table, write_record

    rec = run_textgcn(dataset, T=code.T, Q=code.Q, Tw=code.Tw, seed=seed, train=cfg.get("train"),
                      modes=tuple(cfg.get("modes", ("functional", "exact"))), progress=not args.quiet)
    path = write_record(rec, out)
    print(summary_table(rec))
    print(f"\nrecord: {path}")
    return 0


def cnn(args: argparse.Namespace) -> int:
    dataset = _image_dataset(args.model, args.dataset)
    weights = in_file(args.weights, "--weights")
    code = _phase_code(args.T, args.Q, args.Tw)
    out = out_dir(args.out)
    _prepare_torch(args)
    from ..experiments.cnn import run_cnn, summary_table
    from ..fileio import write_json

    rec = run_cnn(args.model, dataset, weights=weights, T=code.T, Q=code.Q, Tw=code.Tw, limit=args.limit,
                  calib=args.calib, seed=args.seed, modes=tuple(args.modes))
    path = write_json(out / _record_name(rec, f"{rec['model']}_{rec['dataset']}"), rec, indent=2)
    print(summary_table(rec))
    print(f"\nrecord: {path}")
    return 0


def finetune(args: argparse.Namespace) -> int:
    code = _phase_code(args.fake_quant[0], args.fake_quant[1], None) if args.fake_quant else None  # validates T, Q
    init = in_file(args.init, "--init")
    out = out_file(args.out) if args.out else None
    _prepare_torch(args)
    from ..experiments.cnn_train import finetune as run

    res = run(args.model, out, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
              batch_size=args.batch_size, label_smoothing=args.label_smoothing, seed=args.seed,
              activation_noise=args.activation_noise, fake_quant=code, fake_quant_window=args.fq_window,
              freeze_bn=args.freeze_bn, init=init, progress=not args.quiet, dataset=args.dataset)
    print(f"{res['arch']}: {args.dataset} test accuracy {100 * res['acc_before']:.2f}% -> "
          f"{100 * res['acc_after']:.2f}%, checkpoint {res['checkpoint']}")
    return 0


def mape(args: argparse.Namespace) -> int:
    from ..experiments.grid import flatten, parse_grid

    stem = Path(args.out).expanduser()
    stem = stem / "mape" if stem.is_dir() else stem.with_suffix("") if stem.suffix in (".json", ".png") else stem
    for suffix in (".json", ".png"):
        out_file(stem.with_name(stem.name + suffix))
    Qs = flatten(args.Q) or parse_grid("1.01:2.00:0.01", name="--Q")
    from ..experiments.sweep import mape_curves, write_mape

    rec = mape_curves(flatten(args.T), Qs, mu=args.mu, sigma=args.sigma, shift=not args.no_shift,
                      progress=not args.quiet)
    rec["command"] = "spikegcn " + " ".join(args.argv)
    jpath, ppath = write_mape(rec, stem)
    for T, opt in rec["optimum"].items():
        print(f"T = {T}: optimal Q = {opt['Q']:g} (MAPE {opt['mape_percent']:.2f} %) on "
              f"{len(rec['Q'])} values of Q in [{rec['Q'][0]:g}, {rec['Q'][-1]:g}]")
    print(f"curves: {jpath}\nfigure: {ppath}")
    return 0


def _sweep_task(args: argparse.Namespace) -> tuple[str, dict, Any]:
    from ..experiments import sweep as S

    if args.task == "textgcn":
        if not args.dataset:
            raise UsageError(f"--task textgcn needs --dataset ({TEXT_DATASETS})")
        from ..text.corpus import canonical_name

        canonical_name(args.dataset)  # refuses an unknown name now
        config = {"dataset": args.dataset, "seed": args.seed}
        return args.dataset, config, lambda: S.TASKS["textgcn"](args.dataset, seed=args.seed,
                                                                progress=not args.quiet,
                                                                model_cache=not args.no_model_cache)
    if not S._cnn_available():
        raise UsageError("CNN sweeps need the CNN converter (spikegcn.conversion.convert_cnn), which this installation "
                         "does not have")
    datasets = S.CNN_MODELS[args.model][0]
    dataset = args.dataset or datasets[0]
    if dataset not in datasets:
        raise UsageError(f"--model {args.model} is swept on --dataset {' or '.join(datasets)}, not {dataset}")
    config = {"model": args.model, "seed": args.seed, "limit": args.limit, "calib": args.calib}
    if dataset != datasets[0]:  # records of the default dataset keep the configuration they were written with
        config["dataset"] = dataset
    return args.model, config, lambda: S.TASKS["cnn"](args.model, seed=args.seed, limit=args.limit,
                                                      calib=args.calib, progress=not args.quiet, dataset=dataset)


def sweep(args: argparse.Namespace) -> int:
    from ..experiments.grid import flatten, grid_points, point_key
    from ..experiments.sweep import run_sweep, summarize_sweep

    Ts, Qs, Tws = flatten(args.T), flatten(args.Q), flatten(args.Tw)
    name, task_config, make = _sweep_task(args)
    out = out_file(args.out or f"{RUNS}/sweep_{args.task}_{name}.json")
    points = grid_points(Ts, Qs, Tws)
    for T, Q, Tw in points:
        _phase_code(T, Q, Tw)
    _prepare_torch(args)
    rec, computed = run_sweep(out, args.task, task_config, points, make, shift=not args.no_shift,
                              progress=not args.quiet, command="spikegcn " + " ".join(args.argv))
    print(f"{len(computed)} of {len(points)} grid points computed now, {len(points) - len(computed)} already in "
          f"{out}")
    print(summarize_sweep(rec, [point_key(*p) for p in points]))
    print(f"\nrecord: {out}")
    return 0


def report(args: argparse.Namespace) -> int:
    results = Path(args.results).expanduser()
    if not results.is_dir():
        raise UsageError(f"--results {results}: no such folder (it holds the records of `spikegcn textgcn`, "
                         f"`cnn`, `sweep` and `mape`; default {RUNS})")
    out = out_file(args.out)
    from ..experiments.report import build_report

    path = build_report(results, out)
    print(f"report: {path}")
    for line in path.read_text().splitlines():
        if line.startswith("- `") and line.endswith(".png`"):
            print(f"figure: {path.parent / line[3:-1]}")
    return 0


def build_kernels(args: argparse.Namespace) -> int:
    from ..kernels import fused_cpu

    try:
        path = fused_cpu.build(force=args.force, verbose=args.verbose)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    isa = fused_cpu.max_isa()
    print(f"compiled CPU kernels: {path} (widest variant on this CPU: {isa})")
    return 0
