r"""Seeded training, fine-tuning and evaluation of the vision models (CPU-friendly, deterministic for a seed).

Determinism: :func:`fit` seeds :func:`torch.manual_seed` (initialisation, dropout) and draws shuffling and
augmentation from the loader's own :class:`torch.Generator` (see :class:`~spikegcn.vision.loaders.BatchLoader`), so
two runs with the same seed and thread count give the same weights on CPU.

Checkpoints (:func:`save_checkpoint`) are results, never committed: :func:`default_checkpoint_path` puts them in
``cache_dir()/checkpoints/``.

Command line (fine-tune a pretrained ResNet on the JPEG training set, checkpoint in ``cache_dir()/checkpoints/``)::

    spikegcn finetune resnet20 --epochs 5
"""
from __future__ import annotations

import math
import numbers
import os
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..coding import PhaseCode, quantize
from ..datafiles import cache_dir
from ..fileio import load_torch, torch_save
from ..vision.loaders import cifar10_loader
from ..vision.models import get_model, load_pretrained

__all__ = [
    "TrainConfig",
    "make_optimizer",
    "lr_at",
    "fit",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "default_checkpoint_path",
    "finetune",
]

Batches = Iterable[tuple[Tensor, Tensor]]


@dataclass
class TrainConfig:
    r"""Hyper-parameters of :func:`fit`.

    Args:
        epochs (int): passes over the training loader. (default: :obj:`10`)
        lr (float): peak learning rate. (default: :obj:`0.1`)
        momentum (float): SGD momentum. (default: :obj:`0.9`)
        weight_decay (float): L2 weight decay (applied to all parameters, as in the reference CIFAR
            recipes). (default: :obj:`5e-4`)
        nesterov (bool): Nesterov momentum. (default: :obj:`False`)
        schedule (str): ``"cosine"`` (per step, to 0), ``"step"`` (multiply by :obj:`gamma` at each epoch of
            :obj:`milestones`) or ``"constant"``. (default: :obj:`"cosine"`)
        milestones (Sequence[int]): epochs of the step schedule. (default: :obj:`()`)
        gamma (float): factor of the step schedule. (default: :obj:`0.1`)
        warmup_epochs (float): linear warm-up from 0 at the start. (default: :obj:`0`)
        label_smoothing (float): label smoothing of the cross-entropy. (default: :obj:`0`)
        seed (int): seed of :func:`torch.manual_seed`. (default: :obj:`0`)
        max_steps (int, optional): stop after this many optimiser steps (timing, smoke tests).
            (default: :obj:`None`)
        activation_noise (float): conversion-aware training: in training mode every :class:`torch.nn.ReLU` output
            is multiplied by :math:`1 + u`, :math:`u \sim U(-a, a)` drawn per element. The one-spike code's
            round-off error is at most :attr:`PhaseCode.max_relative_error` :math:`= (Q - 1) / (Q + 1)` of a value
            (0.13 at Q = 1.3), so training with that :math:`a` teaches the network margins that survive the
            conversion. Needs ReLU modules (not
            ``F.relu``), as all models of :mod:`spikegcn.vision.models` have. (default: :obj:`0`, off)
        fake_quant (PhaseCode, optional): conversion-aware training with the code itself: in training mode every
            :class:`torch.nn.ReLU` output is replaced by its one-spike quantisation
            (:func:`spikegcn.coding.quantize` of the output over its per-channel maximum, times that maximum),
            with straight-through gradients. With :obj:`fake_quant_window` > 1 the scale is the converter's:
            per channel for conv outputs, one per layer for fully-connected and average-pool outputs (which are
            then quantised too, as the converter re-encodes them), one window per call site of a module.
            Exclusive with :obj:`activation_noise`. (default: :obj:`None`)
        fake_quant_window (int): the maximum behind :obj:`fake_quant` is taken over the last this many batches
            (1: the current batch only). The converter's :math:`\lambda` is the maximum over its calibration
            images (a few thousand), so a window of about that many images makes training see the converter's
            round-off, including the underflow of small values (``spikegcn cnn`` calibrates on 1,000 images,
            ``benchmarks/cnn_tables.py`` on 2,000). (default: :obj:`1`)
        freeze_bn (bool): keep every batch-norm layer in eval mode (running statistics frozen, affine parameters
            trained), so that training sees the normalisation the converter folds into the thresholds.
            (default: :obj:`False`)
    """

    epochs: int = 10
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    milestones: Sequence[int] = field(default_factory=tuple)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    max_steps: Optional[int] = None
    activation_noise: float = 0.0
    fake_quant: Optional[PhaseCode] = None
    fake_quant_window: int = 1
    freeze_bn: bool = False

    def __post_init__(self) -> None:
        w = self.fake_quant_window
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1:
            raise ValueError(f"fake_quant_window must be a positive integer, got {w!r}")
        self.fake_quant_window = int(w)
        if w > 1 and self.fake_quant is None:
            raise ValueError("fake_quant_window needs fake_quant")
        if not 0.0 <= self.activation_noise < 1.0:
            raise ValueError(f"activation_noise must be in [0, 1), got {self.activation_noise}")
        if self.fake_quant is not None:
            if not isinstance(self.fake_quant, PhaseCode):
                raise TypeError(f"fake_quant must be a PhaseCode, got {type(self.fake_quant).__name__}")
            if self.activation_noise > 0:
                raise ValueError("activation_noise and fake_quant are exclusive")


@contextmanager
def _relu_hooks(model: nn.Module, cfg: TrainConfig) -> Iterator[None]:
    """Conversion-aware training hooks on every ReLU (:attr:`TrainConfig.activation_noise` / ``fake_quant``),
    removed on exit."""
    a, code = cfg.activation_noise, cfg.fake_quant
    if a == 0 and code is None:
        yield
        return

    def noise(module: nn.Module, args, out: Tensor) -> Optional[Tensor]:
        if module.training:
            return out * (1.0 + a * (2.0 * torch.rand_like(out) - 1.0))
        return None

    window = cfg.fake_quant_window
    recent: dict[tuple, deque] = {}
    calls: dict[int, int] = {}  # call count per module within the current forward pass

    def fake_quant(module: nn.Module, args, out: Tensor) -> Optional[Tensor]:
        if not module.training:
            return None
        if isinstance(module, nn.ReLU) and out.dim() == 4:
            dims = [0, 2, 3]  # per channel, as the converter normalises conv outputs
        elif isinstance(module, nn.ReLU) and window == 1:
            dims = list(range(out.dim() - 1))  # per feature over the batch
        else:  # pooling, and with a window fully-connected outputs: one scale per layer, as the converter does
            dims = list(range(out.dim()))
        lam = out.detach().amax(dim=dims, keepdim=True)
        if window > 1:
            # one window per call site (a module reused at several sites gets one per site, like the converter's λ)
            site = calls[id(module)] = calls.get(id(module), -1) + 1
            past = recent.setdefault((id(module), site), deque(maxlen=window))
            past.append(lam)  # batch dims are reduced (keepdim), so a site's scale shape never changes
            lam = torch.stack(list(past)).amax(0)
        lam = lam.clamp_min(1e-12)
        q = quantize(out.detach() / lam, code) * lam
        return out + (q - out).detach()  # straight-through

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"activation_noise / fake_quant need nn.ReLU modules; {type(model).__name__} has none")
    sites: list[nn.Module] = list(relus)
    if code is not None and window > 1:
        sites = sites + [m for m in model.modules() if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d))]
    hooks = [m.register_forward_hook(noise if a > 0 else fake_quant) for m in sites]
    hooks.append(model.register_forward_pre_hook(lambda m, args: calls.clear()))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay over the trainable parameters of :obj:`model`."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
    )


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimiser step :obj:`step` (0-based) under :obj:`cfg`'s schedule."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = cfg.warmup_epochs * steps_per_epoch
    if warm > 0 and step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "cosine":
        t = (step - warm) / max(1.0, total - warm)
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, t)))
    if cfg.schedule == "step":
        epoch = step // max(1, steps_per_epoch)
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "constant":
        return cfg.lr
    raise ValueError(f"unknown schedule {cfg.schedule!r} (cosine, step, constant)")


def _bar(iterable, total: Optional[int], desc: str, progress: bool):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Batches,
    *,
    progress: bool = False,
    device: Union[str, torch.device, None] = None,
) -> float:
    r"""Top-1 accuracy (a fraction in ``[0, 1]``) of :obj:`model` in eval mode over :obj:`loader`.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in _bar(loader, _len(loader), "eval", progress):
            if device is not None:
                x, y = x.to(device), y.to(device)
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return correct / max(1, total)


def _len(loader) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None


def fit(
    model: nn.Module,
    train_loader: Batches,
    cfg: TrainConfig,
    *,
    val_loader: Optional[Batches] = None,
    progress: bool = True,
    device: Union[str, torch.device, None] = None,
) -> dict:
    r"""Train :obj:`model` with SGD under :obj:`cfg`; returns a history dict.

    Call :func:`torch.manual_seed` yourself before building a freshly initialised model if its initialisation must
    be reproducible too (this function seeds again at its start, for anything random during training). Loaders
    with a ``set_epoch`` method (:class:`~spikegcn.vision.loaders.BatchLoader`) are told the epoch before each pass.
    The model is left in eval mode.

    Returns:
        ``{"loss": [mean loss per epoch], "val_acc": [accuracy per epoch, if val_loader], "steps": int,
        "seconds": float, "seconds_per_step": float}``
    """
    torch.manual_seed(cfg.seed)
    if device is not None:
        model.to(device)
    opt = make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    steps_per_epoch = _len(train_loader) or 1
    hist: dict = {"loss": [], "val_acc": [], "steps": 0}
    t0 = time.perf_counter()
    with _relu_hooks(model, cfg):
        step = 0
        for epoch in range(cfg.epochs):
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            model.train()
            if cfg.freeze_bn:
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
            tot, n = 0.0, 0
            bar = _bar(train_loader, _len(train_loader), f"epoch {epoch + 1}/{cfg.epochs}", progress)
            for x, y in bar:
                if device is not None:
                    x, y = x.to(device), y.to(device)
                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, step, steps_per_epoch)
                loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                tot += loss.item() * len(y)
                n += len(y)
                if progress and hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{tot / n:.3f}", refresh=False)
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
            hist["loss"].append(tot / max(1, n))
            if val_loader is not None:
                hist["val_acc"].append(evaluate(model, val_loader, device=device))
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
    hist["steps"] = step
    hist["seconds"] = time.perf_counter() - t0
    hist["seconds_per_step"] = hist["seconds"] / max(1, step)
    model.eval()
    return hist


def save_checkpoint(path: Union[str, os.PathLike], model: nn.Module, **meta) -> Path:
    r"""Save ``{"state_dict": ..., **meta}`` to :obj:`path` (parent folders are created; written atomically)."""
    return torch_save({"state_dict": model.state_dict(), **meta}, Path(path).expanduser())


def load_checkpoint(path: Union[str, os.PathLike], name: Optional[str] = None, **model_kwargs) -> nn.Module:
    r"""Rebuild a model saved by :func:`save_checkpoint` (its ``"arch"`` entry names it unless :obj:`name` is given;
    extra keyword arguments go to the model constructor) and load it strictly; returned in eval mode."""
    ckpt = load_torch(path)
    arch = name or ckpt.get("arch")
    if arch is None:
        raise ValueError(f"{path} names no architecture; pass name=")
    model = get_model(arch, **{**ckpt.get("model_kwargs", {}), **model_kwargs})
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval()


def default_checkpoint_path(name: str, tag: str = "jpg-ft") -> Path:
    """``cache_dir()/checkpoints/<name>-<tag>.pt``: where fine-tuned checkpoints live by default (never the repo)."""
    return cache_dir() / "checkpoints" / f"{name}-{tag}.pt"


def finetune(
    name: str = "resnet20",
    out: Union[str, os.PathLike, None] = None,
    *,
    epochs: int = 3,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    batch_size: int = 128,
    label_smoothing: float = 0.0,
    seed: int = 0,
    activation_noise: float = 0.0,
    fake_quant: Optional[PhaseCode] = None,
    fake_quant_window: int = 1,
    freeze_bn: bool = False,
    init: Union[str, os.PathLike, None] = None,
    progress: bool = True,
    max_steps: Optional[int] = None,
    dataset: str = "cifar10-jpg",
) -> dict:
    r"""Fine-tune a pretrained CIFAR ResNet on the CIFAR-10 **JPEG** training set (or, with
    ``dataset="cifar10"``, the official images) and save a checkpoint.

    The published checkpoints were trained on the lossless images and lose about 10 points on the JPEG test set; a
    few epochs of low-LR SGD (cosine, with crop-and-flip augmentation) on the JPEG training images adapt them.
    Costs about 2 minutes per epoch for ResNet-20 on 2 CPU cores.

    Args:
        name (str): ``"resnet20"``, ``"resnet32"``, ``"resnet44"`` or ``"resnet56"``.
        out (str or PathLike, optional): checkpoint path; default :func:`default_checkpoint_path` with tag
            ``"jpg-ft"``, ``"jpg-ft-an<a>"`` when :obj:`activation_noise` is set or the ``fake_quant`` tag below,
            plus ``"-fbn"`` with :obj:`freeze_bn`.
        epochs, lr, weight_decay, batch_size, label_smoothing, seed, activation_noise, fake_quant,
            fake_quant_window, freeze_bn: training settings (see :class:`TrainConfig`); :obj:`fake_quant` sets the
            tag ``"jpg-ft-fq<T>-<Q>"``, followed by ``"-w<window>"`` for a window > 1 and ``"-fbn"`` with
            :obj:`freeze_bn`.
        init (str or PathLike, optional): start from this checkpoint (e.g. a plain fine-tuned one) instead of the
            published weights. (default: :obj:`None`)
        progress (bool, optional): tqdm bars. (default: :obj:`True`)
        max_steps (int, optional): stop early after this many steps (smoke tests). (default: :obj:`None`)
        dataset (str, optional): ``"cifar10-jpg"`` or ``"cifar10"``; the tags above start with ``"ft"`` instead
            of ``"jpg-ft"`` on ``"cifar10"``. (default: :obj:`"cifar10-jpg"`)

    Returns:
        a summary: ``{"arch", "checkpoint", "acc_before", "acc_after", "history", "config"}`` (accuracies on the
        JPEG test set, fractions).
    """
    cfg = TrainConfig(  # validated before any work
        epochs=epochs, lr=lr, weight_decay=weight_decay, label_smoothing=label_smoothing, seed=seed,
        schedule="cosine", max_steps=max_steps, activation_noise=activation_noise, fake_quant=fake_quant,
        fake_quant_window=fake_quant_window, freeze_bn=freeze_bn,
    )
    ft = "jpg-ft" if dataset == "cifar10-jpg" else "ft"
    tag = ft if activation_noise == 0 else f"{ft}-an{activation_noise:g}"
    if fake_quant is not None:
        tag = f"{ft}-fq{fake_quant.T}-{fake_quant.Q:g}" + (f"-w{fake_quant_window}" if fake_quant_window > 1 else "")
    if freeze_bn:
        tag += "-fbn"
    out = Path(out) if out is not None else default_checkpoint_path(name, tag)
    model = load_checkpoint(init, name) if init is not None else load_pretrained(name)
    test = cifar10_loader("test", 500, dataset=dataset)
    acc_before = evaluate(model, test, progress=progress)
    hist = fit(model, cifar10_loader("train", batch_size, seed=seed, dataset=dataset), cfg, progress=progress)
    acc_after = evaluate(model, test, progress=progress)
    save_checkpoint(
        out, model, arch=name, accuracy=acc_after, accuracy_pretrained=acc_before, config=_plain(asdict(cfg)),
        data=dataset.replace("-", "_"), init=str(init) if init is not None else "published",
    )
    return {
        "arch": name, "checkpoint": str(out), "acc_before": acc_before, "acc_after": acc_after,
        "history": hist, "config": asdict(cfg),
    }


def _plain(d: dict) -> dict:
    # weights_only loading accepts only plain containers: turn tuples into lists.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
