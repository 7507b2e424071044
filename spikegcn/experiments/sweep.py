r"""Grid sweeps over the code (T, Q, Tw) of one trained network, resumable, and the Eq. 5 MAPE curves.

A sweep trains (or loads) the ANN **once**, then converts and evaluates it at every grid point:
functional mode where it is exact (``Tw >= T``, or no ``Tw`` given), exact (phase-by-phase) mode for ``Tw < T``.
Every point records the SNN accuracy, the loss in points against the ANN, spikes per neuron per layer and the
energy ratios (FP32 with the per-layer breakdown, INT8). The results file is rewritten after every point, and grid
points already in it are skipped, so an interrupted or extended sweep only computes what is missing.

The task-specific part is one function per task that returns a :class:`Task` (``evaluate(code) -> metrics``):
:func:`textgcn_task` and :func:`cnn_task`.

    spikegcn sweep --task textgcn --dataset R8 --Q 1.1:2.0:0.1 --T 8 12 16 24
    spikegcn sweep --task textgcn --dataset R8 --T 16 --Q 1.3 --Tw 2 4 6 8 10 12 14 16
    spikegcn mape --T 16 24
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..fileio import file_lock, write_json
from .grid import point_key

__all__ = ["Task", "textgcn_task", "cnn_task", "TASKS", "run_sweep", "summarize_sweep", "best_points", "mape_curves",
           "write_mape"]

SWEEP_FORMAT = 1
MAPE_FORMAT = 1
ACTIVATION_SAMPLE = 3000  # activations kept for the encoded-vs-true figure (Fig. 7)


# ------------------------------------------------------------------------------------------------------ tasks
@dataclass
class Task:
    """A trained ANN ready for conversion.

    Attributes:
        meta: what the record header says about it (ann_accuracy, dataset, model, seed, training...).
        evaluate: ``evaluate(code) -> metrics`` of the SNN converted with ``code``.
        activation_sample: ``() -> dict`` with a sample of one hidden layer's calibrated (lambda-normalised)
            activations, for the encoded-vs-true figure; ``None`` when the task has none.
    """

    meta: dict[str, Any]
    evaluate: Callable[[Any], dict[str, Any]]
    activation_sample: Callable[[], dict[str, Any]] | None = None


def _mode(code) -> str:
    return "functional" if code.functional else "exact"


_COUNTS = ("macs", "additions", "approx_additions", "in_neurons", "in_spikes", "out_neurons", "out_spikes")


def _compact_energy(e: dict, inputs: int = 1, per: str = "graph") -> dict:
    """The energy report with counts per input (``inputs`` inputs were run); ratios are unchanged."""
    keep = ("name", "kind", *_COUNTS, "s", "spikes_per_neuron", "saturated", "ratio")
    scale = lambda k, v: v / inputs if k in _COUNTS else v  # noqa: E731
    return {"ratio": e["ratio"], "ratio_approx": e["ratio_approx"], "counts_per": per,
            **{k: e[k] / inputs for k in ("macs", "additions", "approx_additions")},
            "layers": [{k: scale(k, l[k]) for k in keep if k in l} for l in e["layers"]]}


def _sample_positive(a, n: int, seed: int) -> dict:
    """Uniform sample of the positive entries of a normalised activation tensor."""
    import torch

    flat = a.detach().reshape(-1).float()
    pos = flat[flat > 0]
    g = torch.Generator().manual_seed(seed)
    if pos.numel() > n:
        pos = pos[torch.randperm(pos.numel(), generator=g)[:n]]
    vals = sorted(float(f"{v:.6g}") for v in pos.tolist())
    return {"n_activations": int(flat.numel()), "fraction_zero": float((flat <= 0).float().mean()),
            "fraction_above_1": float((flat > 1).float().mean()), "values": vals}


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def textgcn_task(dataset: str, seed: int = 0, train: dict | None = None, progress: bool = True,
                 model_cache: bool = True) -> Task:
    """Text GCN on ``dataset``: build the graph, train the ANN with ``seed`` (or load the model a previous sweep
    cached under ``cache_dir()/models``), and evaluate converted SNNs on the test documents."""
    import torch

    from ..datafiles import cache_dir
    from ..fileio import load_cached, load_torch, torch_save
    from ..text.graph import build_text_graph
    from ..text.model import TextGCN, sparse_identity, to_torch_csr
    from .textgcn import evaluate_snn, prepare_textgcn
    from .textgcn_train import TrainConfig

    graph = build_text_graph(dataset, seed=seed, progress=progress)
    cfg = TrainConfig(seed=seed, **(train or {}))
    key = _sha({"graph": graph.counts(), "train": asdict(cfg), "torch": torch.__version__.split("+")[0]})
    path = cache_dir() / "models" / f"textgcn-{graph.name}-seed{seed}-{key}.pt"
    t0 = time.perf_counter()
    def load_model(p: Path) -> tuple[TextGCN, dict]:
        state = load_torch(p, "cached Text GCN model")
        net = TextGCN(graph.n_nodes, graph.n_classes, cfg.hidden, cfg.dropout)
        net.load_state_dict(state["model"])
        return net.eval(), state

    cached = load_cached(path, load_model, "cached Text GCN model") if model_cache else None
    if cached is not None:
        model, state = cached
        x, adj_t, epochs = sparse_identity(graph.n_nodes), to_torch_csr(graph.adj_norm), state["epochs"]
        source = f"Text GCN trained with seed {seed} ({epochs} epochs), loaded from the model cache {path}"
    else:
        graph, model, x, adj_t, hist, cfg, _ = prepare_textgcn(dataset, seed, train, progress)
        epochs = len(hist)
        source = f"Text GCN trained with seed {seed} ({epochs} epochs) by the sweep that created this record"
        if model_cache:
            try:
                torch_save({"model": model.state_dict(), "epochs": epochs, "train": asdict(cfg)}, path)
            except OSError as exc:  # a read-only cache only costs the training next time
                warnings.warn(f"could not cache the trained model at {path}: {exc}", RuntimeWarning, stacklevel=2)
    t_model = time.perf_counter() - t0
    labels = torch.from_numpy(graph.labels).long()
    test = torch.from_numpy(graph.test_idx).long()
    with torch.no_grad():
        out = model(x, adj_t)
    ann = float((out[test].argmax(1) == labels[test]).float().mean() * 100)

    def evaluate(code) -> dict:
        mode = _mode(code)
        ev = evaluate_snn(model, x, adj_t, labels, test, code, modes=(mode,), variants=(), ann_acc=ann)
        r = ev["snn"][mode]
        return {"mode": mode, "accuracy": r["accuracy"], "loss_points": r["loss_points"], "seconds": r["seconds"],
                "spikes_per_neuron": r["spikes_per_neuron"],
                "energy_fp32": _compact_energy(r["energy_fp32"], 1, "graph"),
                "energy_int8": r["energy_int8"], "energy_int8_mult_only": r["energy_int8_mult_only"]}

    def activation_sample() -> dict:
        from ..conversion.observers import activation_scale

        with torch.no_grad():
            y = model.conv1(x, adj_t)
        lam = activation_scale(y, signed=False, channel_wise=True)
        a = y.clamp(min=0) / lam
        return {"layer": "conv1 (AGG1: ReLU(Â X W0), the hidden ReLU layer)",
                "normalisation": "per-channel max over all nodes (the converter's lambda)",
                **_sample_positive(a, ACTIVATION_SAMPLE, seed)}

    meta = {"task": "textgcn", "dataset": graph.name, "model": "textgcn", "seed": seed, "ann_accuracy": ann,
            "test_size": int(test.numel()), "train_config": asdict(cfg), "epochs_run": epochs,
            "model_source": source, "graph": graph.counts(), "seconds_model": t_model}
    return Task(meta, evaluate, activation_sample)


CNN_MODELS = {  # model -> datasets it is swept on (the first is the default), checkpoint (name, tag), how to make it
    "resnet20": (("cifar10-jpg", "cifar10"), ("resnet20", "jpg-ft"), "published weights if not fine-tuned"),
    "vgg_cifar": (("cifar10-jpg",), ("vgg_cifar", "small-jpg"), "python benchmarks/cnn_tables.py --models vgg"),
    "lenet5": (("mnist",), ("lenet5", "mnist"), "python benchmarks/cnn_tables.py --models lenet5"),
}
_DATASET_LABELS = {"cifar10-jpg": "CIFAR-10 JPEG", "cifar10": "CIFAR-10", "mnist": "MNIST"}


def _cnn_available() -> bool:
    import importlib

    try:
        conv = importlib.import_module("spikegcn.conversion")
    except ImportError:
        return False
    return hasattr(conv, "convert_cnn")


def cnn_task(model: str = "resnet20", seed: int = 0, limit: int = 1000, calib: int = 2000, batch: int = 250,
             progress: bool = True, dataset: str | None = None) -> Task:
    """A trained CNN (``resnet20``, ``vgg_cifar`` or ``lenet5``, from the checkpoints of
    ``benchmarks/cnn_tables.py``; ResNet-20 falls back to the published weights, which it always uses on the
    official ``cifar10``), its test images of ``dataset`` (default: the model's first in :data:`CNN_MODELS`;
    ``limit`` evenly spaced, all when 0) and ``calib`` random training images for lambda."""
    if not _cnn_available():
        raise RuntimeError("CNN sweeps need the CNN converter (spikegcn.conversion.convert_cnn), which this "
                           "installation of spikegcn does not have")
    import torch

    from ..conversion import convert
    from ..energy import FP32, INT8, INT8_MULT_ONLY
    from ..vision import load_dataset, load_pretrained, preprocess
    from .cnn_train import default_checkpoint_path, load_checkpoint

    if model not in CNN_MODELS:
        raise ValueError(f"unknown CNN model {model!r}; choose from {sorted(CNN_MODELS)}")
    datasets, (arch, tag), how = CNN_MODELS[model]
    name = dataset or datasets[0]
    if name not in datasets:
        raise ValueError(f"model {model} is swept on {' or '.join(datasets)}, not {name!r}")
    ck = default_checkpoint_path(arch, tag)
    if ck.is_file() and name != "cifar10":
        net, source = load_checkpoint(ck), f"checkpoint {ck}"
    elif model == "resnet20":
        net, source = load_pretrained("resnet20"), "published akamaster weights (not fine-tuned on the JPEG images)"
    else:
        raise FileNotFoundError(f"no trained {model} checkpoint at {ck}; make it with `{how}` in a source checkout")
    net.eval()
    xtr, _ = load_dataset(name, "train")
    xte, yte = load_dataset(name, "test")
    prep = lambda t: preprocess(name, t)  # noqa: E731
    dataset = _DATASET_LABELS[name]
    idx = torch.arange(len(yte)) if limit <= 0 or limit >= len(yte) else \
        torch.linspace(0, len(yte) - 1, limit).round().long()
    x, y = prep(xte[idx]), yte[idx]
    xc = prep(xtr[torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))[:calib]])
    with torch.no_grad():
        ann_logits = torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])
    ann = 100.0 * float((ann_logits.argmax(1) == y).double().mean())
    from ..coding import PhaseCode

    snn = convert(net, xc, PhaseCode(16, 1.3), mode="functional")  # lambdas do not depend on the code

    def evaluate(code) -> dict:
        mode = _mode(code)
        snn.set_code(code).set_mode(mode)
        t0 = time.perf_counter()
        out = snn.run(x, batch)
        secs = time.perf_counter() - t0
        acc = 100.0 * float((out.argmax(1) == y).double().mean())
        stats = snn.layer_stats()
        return {"mode": mode, "accuracy": acc, "loss_points": ann - acc, "seconds": secs,
                "agreement": 100.0 * float((out.argmax(1) == ann_logits.argmax(1)).double().mean()),
                "spikes_per_neuron": {s.name: s.spikes_per_neuron for s in stats if s.out_neurons},
                "energy_fp32": _compact_energy(snn.energy(FP32), len(y), "image"),
                "energy_int8": snn.energy(INT8)["ratio"],
                "energy_int8_mult_only": snn.energy(INT8_MULT_ONLY)["ratio"]}

    def activation_sample() -> dict:
        return _cnn_activation_sample(net, xc, batch, seed)

    meta = {"task": "cnn", "dataset": dataset, "model": model, "seed": seed, "ann_accuracy": ann,
            "test_size": int(len(y)), "calib_images": int(len(xc)), "model_source": source}
    return Task(meta, evaluate, activation_sample)


def _cnn_activation_sample(net, xc, batch: int, seed: int) -> dict:
    """Calibrated activations of the middle hidden ReLU of a CNN (per-channel max for conv outputs)."""
    import torch
    import torch.nn.functional as F
    from torch import fx, nn

    from ..conversion.cnn_capture import CNNTracer
    from ..conversion.observers import activation_scale

    gm = fx.GraphModule(net, CNNTracer().trace(net))
    mods = dict(gm.named_modules())
    relus = [n for n in gm.graph.nodes if (n.op == "call_module" and isinstance(mods.get(n.target), nn.ReLU))
             or (n.op == "call_function" and n.target in (F.relu, torch.relu))
             or (n.op == "call_method" and n.target == "relu")]
    if not relus:
        raise ValueError("the CNN has no ReLU to sample")
    target = relus[len(relus) // 2]
    outs = []

    class Rec(fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            if n is target:
                outs.append(r.detach())
            return r

    with torch.no_grad():
        for i in range(0, len(xc), batch):
            Rec(gm).run(xc[i:i + batch])
    y = torch.cat(outs)
    lam = activation_scale(y, signed=False, channel_wise=y.dim() > 2)
    a = y.clamp(min=0) / (lam.view(1, -1, *([1] * (y.dim() - 2))) if lam.dim() else lam)
    return {"layer": f"{target.name} (hidden ReLU {relus.index(target) + 1} of {len(relus)})",
            "normalisation": ("per-channel max over the calibration images (the converter's lambda)" if y.dim() > 2
                              else "layer max over the calibration images (the converter's lambda)"),
            **_sample_positive(a, ACTIVATION_SAMPLE, seed)}


TASKS: dict[str, Callable[..., Task]] = {"textgcn": textgcn_task, "cnn": cnn_task}


# ------------------------------------------------------------------------------------------------------ sweeping
def _versions() -> dict[str, str]:
    import scipy
    import torch

    from .. import __version__

    return {"spikegcn": __version__, "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_sweep(path: Path) -> dict | None:
    """The sweep record at ``path`` (``None`` when absent); raises ``ValueError`` naming the file if it is not
    a sweep record."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); move it away or pick another --out") from None
    if not isinstance(rec, dict) or rec.get("kind") != "sweep" or not isinstance(rec.get("points"), dict):
        raise ValueError(f"{path}: not a sweep record (no 'kind': 'sweep' with 'points'); pick another --out")
    return rec


def run_sweep(out: str | Path, task_name: str, task_config: dict[str, Any], points: Sequence[tuple[int, float, int]],
              make_task: Callable[[], Task], shift: bool = True, progress: bool = True,
              command: str | None = None) -> tuple[dict, list[str]]:
    """Evaluate every grid point not yet in the results file ``out``; the file is rewritten after each point.

    ``task_config`` identifies the trained network (task, dataset/model, seed, ...): resuming a file written for
    another configuration is an error. ``make_task`` is only called when some point is missing.

    Returns:
        ``(record, computed)``: the full record and the keys computed in this call.
    """
    from tqdm.auto import tqdm

    from ..coding import PhaseCode

    path = Path(out)
    rec = load_sweep(path)
    cfg_norm = {k: (v.lower() if k == "dataset" and isinstance(v, str) else v) for k, v in task_config.items()}
    if rec is not None:
        old = {k: (v.lower() if k == "dataset" and isinstance(v, str) else v)
               for k, v in rec.get("task_config", {}).items()}
        if old != cfg_norm or rec.get("task") != task_name:
            raise ValueError(f"{path} holds a sweep of task {rec.get('task')!r} with {rec.get('task_config')}, not "
                             f"{task_name!r} with {task_config}; pick another --out")
    codes = {point_key(T, Q, Tw): PhaseCode(T, Q, shift=shift, Tw=Tw) for T, Q, Tw in points}
    if rec is not None and any(p.get("shift", True) != shift for p in rec["points"].values()):
        raise ValueError(f"{path} was written with shift={not shift}; pick another --out")
    todo = [k for k in codes if rec is None or k not in rec["points"]]
    if not todo:
        return rec, []
    task = make_task()
    if rec is None:
        rec = {"kind": "sweep", "format": SWEEP_FORMAT, "task": task_name, "task_config": task_config,
               **{k: task.meta[k] for k in ("dataset", "model", "seed") if k in task.meta},
               "ann_accuracy": task.meta["ann_accuracy"], "meta": task.meta, "created": _now(), "points": {}}
        if task.activation_sample is not None:
            rec["activation_sample"] = task.activation_sample()
    elif abs(rec["ann_accuracy"] - task.meta["ann_accuracy"]) > 1e-6:
        warnings.warn(f"the ANN of this run has accuracy {task.meta['ann_accuracy']:.4f} %, the file's "
                      f"{rec['ann_accuracy']:.4f} %; each point keeps the ANN accuracy it was measured against",
                      RuntimeWarning, stacklevel=2)
    rec.update(versions=_versions(), machine=f"{platform.machine()} {_threads()} threads")
    if command:
        rec.setdefault("commands", [])
        if command not in rec["commands"]:
            rec["commands"].append(command)
    bar = tqdm(todo, desc=f"sweep {task_name} {rec.get('dataset', '')}", disable=not progress, unit="point")
    computed = []
    for key in bar:
        disk = load_sweep(path)  # another process writing the same file may have computed this point meanwhile
        if disk is not None and key in disk["points"]:
            rec["points"][key] = disk["points"][key]
            continue
        code = codes[key]
        bar.set_postfix_str(key)
        m = task.evaluate(code)
        rec["points"][key] = {"T": code.T, "Q": code.Q, "Tw": code.Tw, "shift": code.shift,
                              "ann_accuracy": task.meta["ann_accuracy"], **m, "computed": _now()}
        rec["updated"] = _now()
        computed.append(key)
        rec = _merge_write(path, rec)
    return rec, computed


def _merge_write(path: Path, rec: dict) -> dict:
    """Write ``rec`` to ``path`` under the file's lock, keeping every point (and command) that another process
    wrote there since this one read it; returns the merged record."""
    with file_lock(path):
        disk = load_sweep(path)
        if disk is not None:
            rec["points"] = {**disk["points"], **rec["points"]}
            cmds = disk.get("commands", []) + [c for c in rec.get("commands", []) if c not in disk.get("commands", [])]
            if cmds:
                rec["commands"] = cmds
            rec["created"] = min(disk.get("created", rec["created"]), rec["created"])
        write_json(path, rec)
    return rec


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def summarize_sweep(rec: dict, keys: Iterable[str] | None = None) -> str:
    """Plain-text table of a sweep's points (all, or ``keys``) and its best setting."""
    pts = rec["points"]
    keys = list(pts) if keys is None else list(keys)
    lines = [f"{rec['task']} {rec.get('dataset', '')} (model {rec.get('model', '')}, seed {rec.get('seed')}): "
             f"ANN {rec['ann_accuracy']:.2f} %",
             f"{'point':>20s}{'mode':>12s}{'SNN %':>9s}{'loss pp':>9s}{'E FP32':>9s}{'E INT8':>9s}  spikes/neuron"]
    for k in keys:
        p = pts[k]
        sp = ", ".join(f"{v:.3f}" for v in p["spikes_per_neuron"].values())
        lines.append(f"{k:>20s}{p['mode']:>12s}{p['accuracy']:9.2f}{p['loss_points']:9.2f}"
                     f"{p['energy_fp32']['ratio']:9.2f}{p['energy_int8']:9.2f}  {sp}")
    best = best_points(rec)
    if best:
        b, f = best["smallest_loss"], best["fewest_phases"]
        lines += ["", f"smallest loss: {b['key']} ({pts[b['key']]['loss_points']:.2f} pp); fewest phases within "
                      f"{best['tolerance']} pp of it: {f['key']} ({pts[f['key']]['loss_points']:.2f} pp, "
                      f"E FP32 {pts[f['key']]['energy_fp32']['ratio']:.2f})"]
    return "\n".join(lines)


def best_points(rec: dict, tolerance: float = 0.1) -> dict | None:
    """Among the functional points (Tw >= T): the smallest loss, and the fewest phases within ``tolerance`` pp."""
    pts = {k: p for k, p in rec["points"].items() if p["Tw"] >= p["T"]}
    if not pts:
        return None
    best = min(pts, key=lambda k: (pts[k]["loss_points"], pts[k]["T"]))
    lim = pts[best]["loss_points"] + tolerance
    few = min((k for k in pts if pts[k]["loss_points"] <= lim),
              key=lambda k: (pts[k]["T"], pts[k]["loss_points"], -pts[k]["energy_fp32"]["ratio"]))
    return {"tolerance": tolerance, "smallest_loss": {"key": best}, "fewest_phases": {"key": few}}


# ------------------------------------------------------------------------------------------------------ MAPE
def mape_curves(Ts: Sequence[int], Qs: Sequence[float], mu: float = 0.0, sigma: float = 1.0,
                shift: bool = True, progress: bool = False) -> dict:
    """Eq. 5 MAPE (in %) over ``Qs`` for every ``T``, and the argmin of each curve."""
    from tqdm.auto import tqdm

    from ..coding import mape

    curves, optimum = {}, {}
    bar = tqdm(total=len(Ts) * len(Qs), desc="MAPE (Eq. 5)", disable=not progress, leave=False)
    for T in Ts:
        vals = []
        for q in Qs:
            vals.append(100.0 * mape(float(q), int(T), mu, sigma, shift))
            bar.update()
        i = int(np.argmin(vals))
        curves[str(T)] = vals
        optimum[str(T)] = {"Q": float(Qs[i]), "mape_percent": vals[i]}
    bar.close()
    return {"kind": "mape", "format": MAPE_FORMAT, "equation": "Eq. 5, Gaussian activations, normalised by mass",
            "mu": mu, "sigma": sigma, "shift": shift, "T": [int(t) for t in Ts], "Q": [float(q) for q in Qs],
            "mape_percent": curves, "optimum": optimum}


def write_mape(rec: dict, out: str | Path) -> tuple[Path, Path]:
    """``<out>.json`` with the curves and ``<out>.png``, a Fig. 6-style plot."""
    out = Path(out)
    if out.suffix in (".json", ".png"):
        out = out.with_suffix("")
    rec = {**rec, "created": _now(), "versions": _versions()}
    jpath, ppath = out.with_name(out.name + ".json"), out.with_name(out.name + ".png")
    write_json(jpath, rec)
    from .report import plot_mape

    plot_mape([(rec, jpath.name)], ppath)
    return jpath, ppath
