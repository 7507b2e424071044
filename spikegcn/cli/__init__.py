r"""The ``spikegcn`` command: ``textgcn``, ``cnn``, ``finetune``, ``mape``, ``sweep``, ``report``, ``build-kernels``.

Only the standard library is imported to build the parser, so ``spikegcn --help`` and every subcommand's
``--help`` answer at once; a command imports torch and the pipelines when it runs (:mod:`spikegcn.cli.commands`).
Arguments, configs and output paths are checked before any work starts. A user error (a bad value, a missing or
corrupt file, an output path that cannot be written, missing data) ends the command with one line on stderr and
exit code 2; ``SPIKEGCN_DEBUG=1`` shows the traceback instead. Records go to ``./spikegcn-runs/`` unless ``--out``
says otherwise, so the commands never write into a source checkout's ``results/``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

__all__ = ["main", "build_parser", "RUNS", "CNN_MODELS", "CNN_INPUTS", "IMAGE_DATASETS", "TEXT_DATASETS"]

RUNS = "spikegcn-runs"
TEXT_DATASETS = "20ng, R8, R52, ohsumed, mr or demo"
#: CNN models (:data:`spikegcn.vision.models.MODELS`) and the input each takes.
CNN_MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "vgg_cifar", "lenet5")
CNN_INPUTS = {"resnet20": "cifar", "resnet32": "cifar", "resnet44": "cifar", "resnet56": "cifar",
              "vgg_cifar": "cifar", "lenet5": "mnist"}
#: :data:`spikegcn.vision.cifar.DATASETS` and their input kind.
IMAGE_DATASETS = {"cifar10": "cifar", "cifar10-jpg": "cifar", "mnist": "mnist"}
SWEEP_MODELS = ("resnet20", "vgg_cifar", "lenet5")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line: ``spikegcn cnn: error: ...``, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, lo: float | None = None, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` for an int or float with a lower bound."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        if kind is float and v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if lo is not None and (v <= lo if strict else v < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {lo:g}, got {text}")
        return v

    parse.__name__ = "integer" if kind is int else "number"
    return parse


def _grid(integer: bool, name: str, minimum: float, strict: bool = False) -> Callable[[str], list]:
    """``spikegcn.experiments.grid.grid_type``, imported when a value is parsed (``--help`` imports nothing)."""

    def parse(tok: str) -> list:
        from ..experiments.grid import grid_type

        return grid_type(integer, name, minimum, strict=strict)(tok)

    parse.__name__ = f"{name} grid"
    return parse


POS_INT, NONNEG_INT, POS_FLOAT = _number(int, 1), _number(int, 0), _number(float, 0, strict=True)


def _common(threads: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    if threads:
        p.add_argument("--threads", type=POS_INT, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes on stderr")
    return p


def _code_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    p.add_argument("--T", type=POS_INT, default=16 if defaults else None, help="phases per window (default 16)")
    p.add_argument("--Q", type=_number(float, 1, strict=True), default=1.3 if defaults else None,
                   help="coding base, 1 < Q (default 1.3)")
    p.add_argument("--Tw", type=NONNEG_INT, default=None, help="wait time (default T)")


def _add_textgcn(sub) -> None:
    t = sub.add_parser("textgcn", parents=[_common()], help="train Text GCN, convert it to a one-spike SNN, evaluate")
    t.add_argument("--dataset", help=TEXT_DATASETS + " (any case)")
    _code_args(t, defaults=False)
    t.add_argument("--seed", type=NONNEG_INT, help="seed of the split and training (default 0)")
    t.add_argument("--config", help="YAML config (configs/textgcn/<ds>.yaml in the source tree); flags override it")
    t.add_argument("--out", default=f"{RUNS}/textgcn", help=f"folder of the JSON records (default {RUNS}/textgcn)")
    t.set_defaults(func="textgcn")


def _add_cnn(sub) -> None:
    c = sub.add_parser("cnn", parents=[_common()],
                       help="convert a trained CNN (CIFAR ResNet, VGG-style, LeNet-5) and evaluate it")
    c.add_argument("--model", required=True, choices=CNN_MODELS,
                   help="resnet20/32/44/56 (published weights), vgg_cifar or lenet5 (--weights)")
    c.add_argument("--dataset", default=None, choices=list(IMAGE_DATASETS),
                   help="cifar10 (official release), cifar10-jpg (JPEG images) or mnist (default: cifar10, "
                        "mnist for lenet5)")
    c.add_argument("--weights", default=None, help="checkpoint path (default: the published ResNet weights)")
    _code_args(c, defaults=True)
    c.add_argument("--limit", type=NONNEG_INT, default=1000, help="test images, evenly spaced (0 = all; default 1000)")
    c.add_argument("--calib", type=POS_INT, default=1000, help="random training images for lambda (default 1000)")
    c.add_argument("--seed", type=NONNEG_INT, default=0)
    c.add_argument("--modes", nargs="+", default=["functional", "exact"], choices=["functional", "exact"])
    c.add_argument("--out", default=f"{RUNS}/cnn", help=f"folder of the JSON records (default {RUNS}/cnn)")
    c.set_defaults(func="cnn")


def _add_finetune(sub) -> None:
    f = sub.add_parser("finetune", parents=[_common()],
                       help="fine-tune a pretrained CIFAR ResNet (by default on the CIFAR-10 JPEG training set)")
    f.add_argument("model", nargs="?", default="resnet20", choices=["resnet20", "resnet32", "resnet44", "resnet56"])
    f.add_argument("--dataset", default="cifar10-jpg", choices=["cifar10-jpg", "cifar10"],
                   help="training and test images (default cifar10-jpg)")
    f.add_argument("--out", default=None, help="checkpoint (default: cache_dir()/checkpoints/<model>-<tag>.pt)")
    f.add_argument("--epochs", type=POS_INT, default=5)
    f.add_argument("--lr", type=POS_FLOAT, default=0.01)
    f.add_argument("--weight-decay", type=_number(float, 0), default=1e-4)
    f.add_argument("--batch-size", type=POS_INT, default=128)
    f.add_argument("--label-smoothing", type=_number(float, 0), default=0.0)
    f.add_argument("--seed", type=NONNEG_INT, default=0)
    f.add_argument("--activation-noise", type=_number(float, 0), default=0.0, metavar="A",
                   help="conversion-aware training: multiply each ReLU output by 1 + U(-A, A); (Q-1)/(Q+1) = 0.13 "
                        "matches the round-off of Q = 1.3 (default 0: plain fine-tuning; checkpoint tag jpg-ft-an<A>)")
    f.add_argument("--fake-quant", nargs=2, type=float, metavar=("T", "Q"), default=None,
                   help="conversion-aware training through the one-spike code itself (straight-through "
                        "gradients), e.g. --fake-quant 16 1.3; checkpoint tag jpg-ft-fq<T>-<Q>")
    f.add_argument("--fq-window", type=POS_INT, default=1, metavar="N",
                   help="with --fake-quant: scale = maximum over the last N batches (about the converter's "
                        "calibration set at N = 16) and average pools quantised too; tag suffix -w<N> (default 1)")
    f.add_argument("--freeze-bn", action="store_true",
                   help="batch-norm layers in eval mode while training (tag suffix -fbn)")
    f.add_argument("--init", default=None, help="start from this checkpoint instead of the published weights")
    f.set_defaults(func="finetune")


def _add_mape(sub) -> None:
    m = sub.add_parser("mape", parents=[_common(threads=False)],
                       help="Eq. 5 MAPE curves over Q, their optima, a Fig. 6-style plot")
    m.add_argument("--T", nargs="+", type=_grid(True, "--T", 1), required=True,
                   help="window lengths, e.g. 16 24 (numbers or start:stop:step)")
    m.add_argument("--Q", nargs="+", type=_grid(False, "--Q", 1.0, strict=True), default=None,
                   help="bases, numbers or start:stop:step ranges (default 1.01:2.00:0.01)")
    m.add_argument("--mu", type=_number(float), default=0.0, help="mean of the Gaussian activations (default 0)")
    m.add_argument("--sigma", type=POS_FLOAT, default=1.0, help="std of the Gaussian activations, > 0 (default 1)")
    m.add_argument("--no-shift", action="store_true", help="floor encoding (Eq. 3) instead of round-off")
    m.add_argument("--out", default=f"{RUNS}/mape",
                   help=f"writes <out>.json and <out>.png, or mape.json and mape.png into an existing folder "
                        f"(default {RUNS}/mape)")
    m.set_defaults(func="mape")


def _add_sweep(sub) -> None:
    s = sub.add_parser("sweep", parents=[_common()], help="grid sweep of T, Q (and Tw) on one trained network; "
                                                          "resumable")
    s.add_argument("--task", choices=["textgcn", "cnn"], default="textgcn")
    s.add_argument("--dataset", help=f"--task textgcn: {TEXT_DATASETS}; --task cnn: cifar10-jpg (default for "
                                     "resnet20 and vgg_cifar), cifar10 (resnet20, published weights) or mnist (lenet5)")
    s.add_argument("--model", default="resnet20", choices=SWEEP_MODELS, help="CNN (--task cnn; default resnet20)")
    s.add_argument("--T", nargs="+", type=_grid(True, "--T", 1), required=True,
                   help="window lengths: numbers or start:stop:step ranges, e.g. 8 12 16 24")
    s.add_argument("--Q", nargs="+", type=_grid(False, "--Q", 1.0, strict=True), required=True,
                   help="bases: numbers or start:stop:step ranges, e.g. 1.1:2.0:0.1")
    s.add_argument("--Tw", nargs="+", type=_grid(True, "--Tw", 0), default=None,
                   help="wait times (default Tw = T: functional mode); Tw < T runs the exact mode")
    s.add_argument("--seed", type=NONNEG_INT, default=0, help="seed of the split and training (default 0)")
    s.add_argument("--limit", type=NONNEG_INT, default=1000,
                   help="CNN test images, evenly spaced (0 = all; default 1000)")
    s.add_argument("--calib", type=POS_INT, default=2000, help="CNN calibration images (default 2000)")
    s.add_argument("--no-shift", action="store_true", help="floor encoding (no threshold shift)")
    s.add_argument("--no-model-cache", action="store_true",
                   help="always train the Text GCN (default: reuse the model a previous sweep cached)")
    s.add_argument("--out", help=f"results file (default {RUNS}/sweep_<task>_<dataset or model>.json)")
    s.set_defaults(func="sweep")


def _add_report(sub) -> None:
    r = sub.add_parser("report", parents=[_common(threads=False)],
                       help="CNN vs GCN report (markdown + figures) from results records")
    r.add_argument("--results", default=RUNS, help=f"folder of the records (default {RUNS}; a source checkout's "
                                                   "committed ones are in results)")
    r.add_argument("--out", default=f"{RUNS}/report.md",
                   help=f"report file (default {RUNS}/report.md); figures go next to it")
    r.set_defaults(func="report")


def _add_build_kernels(sub) -> None:
    b = sub.add_parser("build-kernels", parents=[_common(threads=False)],
                       help="compile the fused CPU kernels once for this environment (about a minute)")
    b.add_argument("--force", action="store_true", help="rebuild even if a build for this environment exists")
    b.add_argument("--verbose", action="store_true", help="show the compiler's output")
    b.set_defaults(func="build_kernels")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="spikegcn", description="One-spike SNN conversion of GCNs and CNNs. Records go to "
                                              f"./{RUNS}/ unless --out says otherwise.")
    from .. import __version__

    ap.add_argument("--version", action="version", version=f"spikegcn {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_textgcn, _add_cnn, _add_finetune, _add_mape, _add_sweep, _add_report, _add_build_kernels):
        add(sub)
    return ap


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (which tests and notebooks replace)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(quiet: bool) -> None:
    log = logging.getLogger("spikegcn")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("spikegcn: %(message)s"))
        log.addHandler(h)
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, 2 for a user error, 130 when interrupted)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.quiet)
    from ..datafiles import DataFileError
    from . import commands

    try:
        return getattr(commands, args.func)(args)
    except KeyboardInterrupt:
        print(f"spikegcn {args.command}: interrupted", file=sys.stderr)
        return 130
    except (commands.UsageError, ValueError, OSError, EOFError, DataFileError) as exc:
        if os.environ.get("SPIKEGCN_DEBUG"):
            raise
        print(f"spikegcn {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2

