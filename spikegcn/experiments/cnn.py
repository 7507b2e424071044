"""CNN end to end: load a trained backbone, convert it, evaluate ANN and SNN on test images, write a record."""
from __future__ import annotations

import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..coding import PhaseCode
from ..energy import FP32, INT8, INT8_MULT_ONLY
from ..fileio import load_cached, load_torch
from ..vision.cifar import DATASETS, load_dataset, preprocess
from ..vision.models import PRETRAINED, load_pretrained
from .cnn_train import default_checkpoint_path, load_checkpoint


def _subset(n_total: int, limit: int | None) -> torch.Tensor:
    """``limit`` evenly spaced indices (class-balanced on the ordered test sets), or all."""
    if not limit or limit >= n_total:
        return torch.arange(n_total)
    return torch.linspace(0, n_total - 1, limit).round().long()


def load_data(dataset: str, limit: int | None, calib: int, seed: int = 0) -> dict[str, Any]:
    """Calibration images (random training images), test images and labels of a dataset of
    :data:`~spikegcn.vision.cifar.DATASETS`, normalised as the models expect."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} (choose from {', '.join(DATASETS)})")
    g = torch.Generator().manual_seed(seed)
    xtr, _ = load_dataset(dataset, "train")
    xte, yte = load_dataset(dataset, "test")
    idx = _subset(len(yte), limit)
    cal = torch.randperm(len(xtr), generator=g)[:calib]
    return {"calib": preprocess(dataset, xtr[cal]), "x": preprocess(dataset, xte[idx]), "y": yte[idx]}


def load_model(name: str, weights: str | Path | None, dataset: str = "cifar10-jpg") -> tuple[torch.nn.Module, str]:
    """A trained model: a checkpoint path (:func:`~spikegcn.experiments.cnn_train.save_checkpoint` format or a
    published ResNet file); without one, for ``resnet20/32/44/56``, on ``cifar10-jpg`` the JPEG fine-tuned
    checkpoint that ``spikegcn finetune`` left in the cache, else the published weights (trained on the official
    CIFAR-10)."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} not found")
        ck = load_torch(path, "weights file")
        if isinstance(ck, dict) and "arch" in ck:
            return load_checkpoint(path).eval(), f"checkpoint {path}"
        return load_pretrained(name, path).eval(), f"weights {path}"
    if name in PRETRAINED:
        ft = default_checkpoint_path(name)
        jpg = dataset == "cifar10-jpg"
        net = load_cached(ft, lambda p: load_checkpoint(p, name), "fine-tuned checkpoint (`spikegcn finetune` "
                          "recreates it)") if jpg else None
        if net is not None:
            return net.eval(), f"fine-tuned on CIFAR-10 JPEG ({ft})"
        return load_pretrained(name).eval(), "published checkpoint (trained on the official CIFAR-10" + (
            f"; not fine-tuned: `spikegcn finetune {name}` adapts it to the JPEG images)" if jpg else ")")
    raise ValueError(f"model {name!r} has no published weights: train it (spikegcn.experiments.cnn_train.fit) "
                     f"and pass --weights PATH")


def _acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == y).double().mean())


def run_cnn(model: str, dataset: str = "cifar10", weights: str | Path | None = None, T: int = 16, Q: float = 1.3,
            Tw: int | None = None, limit: int | None = 1000, calib: int = 1000, seed: int = 0,
            modes: tuple[str, ...] = ("functional", "exact"), batch_size: int = 200) -> dict[str, Any]:
    """Convert ``model`` with ``PhaseCode(T, Q, Tw=Tw)`` and evaluate the ANN and the SNN in every mode."""
    from ..conversion import convert

    torch.manual_seed(seed)
    code = PhaseCode(T, Q, Tw=Tw)
    net, weights_desc = load_model(model, weights, dataset)
    data = load_data(dataset, limit, calib, seed)
    x, y = data["x"], data["y"]
    t0 = time.perf_counter()
    with torch.no_grad():
        ann_logits = torch.cat([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    t_ann = time.perf_counter() - t0
    ann = _acc(ann_logits, y)
    res: dict[str, Any] = {}
    for mode in modes:
        snn = convert(net, data["calib"], code, mode=mode)
        t0 = time.perf_counter()
        out = snn.run(x, batch_size)
        t_snn = time.perf_counter() - t0
        stats = snn.layer_stats()
        e32 = snn.energy(FP32)
        res[mode] = {
            "accuracy": _acc(out, y),
            "loss_points": ann - _acc(out, y),
            "agreement_with_ann": 100.0 * float((out.argmax(1) == ann_logits.argmax(1)).double().mean()),
            "seconds": t_snn,
            "time_ratio_to_ann": t_snn / t_ann,
            "spikes_per_neuron": {s.name: s.spikes_per_neuron for s in stats if s.out_neurons},
            "input_spikes_per_pixel": stats[0].s,
            "energy_fp32": e32,
            "energy_int8": snn.energy(INT8)["ratio"],
            "energy_int8_mult_only": snn.energy(INT8_MULT_ONLY)["ratio"],
        }
    return {
        "task": "cnn",
        "model": model,
        "dataset": dataset,
        "weights": weights_desc,
        "seed": seed,
        "code": {"T": code.T, "Q": code.Q, "Tw": code.Tw, "shift": code.shift},
        "test_images": len(y),
        "calib_images": len(data["calib"]),
        "ann_accuracy": ann,
        "snn": res,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def summary_table(rec: dict[str, Any]) -> str:
    c = rec["code"]
    lines = [f"{rec['model']} on {rec['dataset']} ({rec['test_images']} test images, {rec['weights']}): "
             f"T = {c['T']}, Q = {c['Q']:g}, Tw = {c['Tw']}", "",
             f"{'':20s}{'accuracy %':>12s}{'loss pp':>10s}{'agree %':>10s}{'E_ANN/E_SNN FP32':>18s}{'INT8':>8s}",
             f"{'ANN':20s}{rec['ann_accuracy']:12.2f}"]
    for mode, r in rec["snn"].items():
        lines.append(f"{'SNN ' + mode:20s}{r['accuracy']:12.2f}{r['loss_points']:10.2f}{r['agreement_with_ann']:10.1f}"
                     f"{r['energy_fp32']['ratio']:18.2f}{r['energy_int8']:8.2f}")
    first = next(iter(rec["snn"].values()))
    sp = first["spikes_per_neuron"]
    lines += ["", f"input spikes per pixel {first['input_spikes_per_pixel']:.2f}; hidden spikes per neuron: "
              + ", ".join(f"{k} {v:.2f}" for k, v in list(sp.items())[:6]) + (" ..." if len(sp) > 6 else "")]
    return "\n".join(lines)
