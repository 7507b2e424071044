"""Text GCN end to end: build the graph, train the ANN, convert it, evaluate ANN and SNN, write a record."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..coding import PhaseCode
from ..conversion import convert
from ..energy import FP32, INT8, INT8_MULT_ONLY
from ..fileio import write_json
from ..nn.aggregation import SpikingAggregation
from ..text.graph import build_text_graph
from .textgcn_train import TrainConfig, train_textgcn

VARIANTS = ("signed", "agg_first", "relu_mp")


def _accuracy(out: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> float:
    return float((out[idx].argmax(1) == y[idx]).float().mean() * 100)


def _versions() -> dict[str, str]:
    import numpy
    import scipy
    import torch_geometric

    from .. import __version__

    return {"spikegcn": __version__, "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "python": platform.python_version()}


def prepare_textgcn(dataset: str, seed: int = 0, train: dict[str, Any] | None = None, progress: bool = True):
    """Build the graph and train the ANN: ``(graph, model, x, adj_t, history, seconds)``."""
    t0 = time.perf_counter()
    graph = build_text_graph(dataset, seed=seed, progress=progress)
    t_graph = time.perf_counter() - t0
    cfg = TrainConfig(seed=seed, **(train or {}))
    t0 = time.perf_counter()
    model, x, adj_t, hist = train_textgcn(graph, cfg, progress=progress)
    return graph, model, x, adj_t, hist, cfg, {"graph": t_graph, "train": time.perf_counter() - t0}


def evaluate_snn(model, x, adj_t, labels: torch.Tensor, test: torch.Tensor, code: PhaseCode,
                 modes: tuple[str, ...] = ("functional", "exact"), variants: tuple[str, ...] = VARIANTS,
                 ann_acc: float | None = None, progress: bool = False) -> dict[str, Any]:
    """Convert the trained model with ``code`` and evaluate every mode and sign variant on ``test``."""
    bar = tqdm(total=len(modes) + len(variants), desc="simulate SNN", disable=not progress, leave=False)
    with torch.no_grad():
        t0 = time.perf_counter()
        ann_out = model(x, adj_t)
        t_ann = time.perf_counter() - t0
    ann_acc = _accuracy(ann_out, labels, test) if ann_acc is None else ann_acc
    snn_res: dict[str, Any] = {}
    for mode in modes:
        snn = convert(model, (x, adj_t), code, mode=mode)
        for m in snn.modules():
            if isinstance(m, SpikingAggregation):
                m.cached = True
        t0 = time.perf_counter()
        out = snn(x, adj_t)
        t_snn = time.perf_counter() - t0
        stats = snn.layer_stats()
        acc = _accuracy(out, labels, test)
        snn_res[mode] = {
            "accuracy": acc,
            "loss_points": ann_acc - acc,
            "seconds": t_snn,
            "time_ratio_to_ann": t_snn / t_ann,
            "spikes_per_neuron": {s.name: s.spikes_per_neuron for s in stats if s.out_neurons},
            "energy_fp32": snn.energy(FP32),
            "energy_int8": snn.energy(INT8)["ratio"],
            "energy_int8_mult_only": snn.energy(INT8_MULT_ONLY)["ratio"],
        }
        bar.update()
    var_res = {}
    for v in variants:
        snn = convert(model, (x, adj_t), code, mode="functional", variant=v)
        acc = _accuracy(snn(x, adj_t), labels, test)
        var_res[v] = {"accuracy": acc, "loss_points": ann_acc - acc, "energy_fp32": snn.energy(FP32)["ratio"],
                      "spikes_per_neuron": {s.name: s.spikes_per_neuron for s in snn.layer_stats() if s.out_neurons}}
        bar.update()
    bar.close()
    return {"ann_accuracy": ann_acc, "ann_seconds": t_ann, "snn": snn_res, "sign_variants": var_res}


def run_textgcn(dataset: str, T: int = 16, Q: float = 1.3, Tw: int | None = None, seed: int = 0,
                train: dict[str, Any] | None = None, modes: tuple[str, ...] = ("functional", "exact"),
                variants: tuple[str, ...] = VARIANTS, progress: bool = True) -> dict[str, Any]:
    """Run the whole pipeline for one dataset and seed; returns the results record (all metrics)."""
    code = PhaseCode(T, Q, Tw=Tw)
    graph, model, x, adj_t, hist, cfg, secs = prepare_textgcn(dataset, seed, train, progress)
    labels = torch.from_numpy(graph.labels).long()
    test = torch.from_numpy(graph.test_idx).long()
    ev = evaluate_snn(model, x, adj_t, labels, test, code, modes, variants, progress=progress)
    return {
        "task": "textgcn",
        "dataset": graph.name,
        "seed": seed,
        "code": {"T": code.T, "Q": code.Q, "Tw": code.Tw, "shift": code.shift},
        "train_config": asdict(cfg),
        "graph": graph.counts(),
        "epochs_run": len(hist),
        "ann_accuracy": ev["ann_accuracy"],
        "snn": ev["snn"],
        "sign_variants": ev["sign_variants"],
        "seconds": {**secs, "ann_forward": ev["ann_seconds"]},
        "versions": _versions(),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_record(rec: dict[str, Any], out_dir: str | Path = "spikegcn-runs/textgcn") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = rec["code"]
    path = out / f"{rec['dataset']}_T{c['T']}_Q{c['Q']:g}_Tw{c['Tw']}_seed{rec['seed']}.json"
    write_json(path, rec, indent=2)  # atomic: `spikegcn report` may read it meanwhile
    return path


def summary_table(rec: dict[str, Any]) -> str:
    c = rec["code"]
    lines = [f"Text GCN on {rec['dataset']} (seed {rec['seed']}): T = {c['T']}, Q = {c['Q']:g}, Tw = {c['Tw']}",
             f"graph: {rec['graph'].get('nodes', '?')} nodes, nnz(A-hat) {rec['graph'].get('nnz', '?')}; "
             f"trained {rec['epochs_run']} epochs",
             "", f"{'':36s}{'accuracy %':>12s}{'loss pp':>10s}{'E_ANN/E_SNN FP32':>18s}{'INT8':>8s}",
             f"{'ANN':36s}{rec['ann_accuracy']:12.2f}"]
    for mode, r in rec["snn"].items():
        lines.append(f"{'SNN ' + mode:36s}{r['accuracy']:12.2f}{r['loss_points']:10.2f}"
                     f"{r['energy_fp32']['ratio']:18.2f}{r['energy_int8']:8.2f}")
    for v, r in rec["sign_variants"].items():
        lines.append(f"{'A14 variant ' + v + ' (functional)':36s}{r['accuracy']:12.2f}{r['loss_points']:10.2f}"
                     f"{r['energy_fp32']:18.2f}")
    first = next(iter(rec["snn"].values()))
    lines += ["", "spikes per neuron: " + ", ".join(f"{k} {v:.3f}" for k, v in first["spikes_per_neuron"].items()),
              "additions vs MACs: " + ", ".join(
                  f"{l['name']} {l['additions']:.3g}/{l['macs']:.3g}" for l in first["energy_fp32"]["layers"])]
    return "\n".join(lines)
