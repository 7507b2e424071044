r"""One report comparing CNN and GCN conversion, built only from the results records, with its figures.

``spikegcn report [--results results] [--out results/report.md]`` reads

==================================  ===================================================================
``textgcn/*.json``, ``cnn/*.json``  conversion records (``spikegcn textgcn``; CNN records with the same keys:
                                    ``task``, ``dataset``/``model``, ``code {T, Q, Tw, shift}``, ``ann_accuracy``,
                                    ``snn {mode: {accuracy, loss_points, spikes_per_neuron, energy_fp32,
                                    energy_int8}}``)
``textgcn_table5.json``             Table V runs and Q/T sweeps (``benchmarks/textgcn_table5.py``)
``cnn_tables.json``                 CNN tables incl. the Tw sweep (``benchmarks/cnn_tables.py``)
``sweep_*.json``                    grid sweeps (``spikegcn sweep``)
``mape*.json``                      Eq. 5 curves (``spikegcn mape``)
==================================  ===================================================================

and writes ``report.md`` plus PNG figures (``report_*.png``) next to it. Every number in the report is read from
a record, with the record's file and configuration next to it; derived quantities (sums, ratios, the latency of
:func:`spikegcn.energy.latency`, sample errors) say how they were derived. Missing inputs are listed with the
command that produces them. A file that cannot be parsed raises ``ValueError`` naming it and the problem.
"""
from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["Conversion", "Results", "load_results", "build_report", "plot_mape", "PRODUCERS"]

N_PIPELINED = 100
PRODUCERS = {
    "textgcn": "spikegcn textgcn --dataset R8",
    "cnn": "spikegcn cnn (or python benchmarks/cnn_tables.py)",
    "table5": "python benchmarks/textgcn_table5.py",
    "cnn_tables": "python benchmarks/cnn_tables.py",
    "sweep_q": "spikegcn sweep --task textgcn --dataset R8 --Q 1.1:2.0:0.1 --T 8 12 16 24",
    "sweep_tw": "spikegcn sweep --task textgcn --dataset R8 --T 16 --Q 1.3 --Tw 2 4 6 8 10 12 14 16",
    "sweep_cnn": "spikegcn sweep --task cnn --model resnet20 --Q 1.1:2.0:0.1 --T 16",
    "mape": "spikegcn mape --T 16 24",
}
NETWORK_NAMES = {"textgcn": "Text GCN", "resnet20": "ResNet-20", "resnet20-an": "ResNet-20 (noise-aware FT)",
                 "resnet20-fq": "ResNet-20 (code-aware FT)",
                 "resnet20-fqw": "ResNet-20 (code-aware FT, converter's scale)",
                 "resnet20-fqw16": "ResNet-20 (code-aware FT, converter's scale, 16 ep)",
                 "resnet20-fqw26": "ResNet-20 (code-aware FT, converter's scale, 26 ep)",
                 "vgg": "VGG (small)", "lenet5": "LeNet-5"}


# ================================================================================================ reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from None


def _get(d: Any, keys: Sequence[Any], path: Path, kind: type | tuple | None = None, pre: Sequence[Any] = ()) -> Any:
    """``d[k0][k1]...``; a missing key or a wrong type raises ``ValueError`` naming the file and the full key
    (``pre`` is where ``d`` sits in the record)."""
    cur = d
    trail: list[str] = [str(k) for k in pre]
    for k in keys:
        trail.append(str(k))
        if not isinstance(cur, dict) or k not in cur:
            raise ValueError(f"{path}: missing key '{'.'.join(trail)}'")
        cur = cur[k]
    if kind is not None and not isinstance(cur, kind):
        raise ValueError(f"{path}: key '{'.'.join(trail)}' must be {_kind_name(kind)}, got {cur!r:.60}")
    return cur


def _kind_name(kind) -> str:
    names = {dict: "an object", list: "a list", str: "a string"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _num(d: Any, keys: Sequence[Any], path: Path, optional: bool = False, pre: Sequence[Any] = ()) -> float | None:
    if optional:
        cur = d
        for k in keys:
            if not isinstance(cur, dict) or k not in cur:
                return None
            cur = cur[k]
        if cur is None:
            return None
    v = _get(d, keys, path, pre=pre)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{path}: key '{'.'.join(map(str, [*pre, *keys]))}' must be a number, got {v!r:.60}")
    return float(v)


@dataclass
class Conversion:
    """One converted network at one code: a row of the CNN-vs-GCN table."""

    network: str
    family: str  # "GCN" or "CNN"
    dataset: str
    source: str  # file (relative to the results folder) and key inside it
    seed: int | None
    T: int
    Q: float
    Tw: int
    mode: str
    ann: float
    snn: float
    loss: float
    spikes: dict[str, float]  # spikes per neuron of every spiking layer
    layers: list[dict]  # name, kind, macs, additions (per inference)
    e_fp32: float
    e_int8: float | None
    e_fp32_approx: float | None = None
    unit: str = "per inference"
    note: str = ""

    @property
    def macs(self) -> float:
        return sum(l["macs"] for l in self.layers)

    @property
    def additions(self) -> float:
        return sum(l["additions"] for l in self.layers)

    @property
    def L(self) -> int:
        """Neuron layers (the output layer included, residual shortcut synapses not)."""
        return sum(1 for l in self.layers if l.get("kind") != "shortcut")

    def latency(self, N: int = 1) -> int:
        from .energy import latency

        return latency(self.T, self.Tw, self.L, N)

    @property
    def label(self) -> str:
        return f"{self.network} · {self.dataset}"


@dataclass
class Results:
    folder: Path
    conversions: list[Conversion] = field(default_factory=list)
    sweeps: list[tuple[str, dict]] = field(default_factory=list)  # (file name, record)
    mapes: list[tuple[str, dict]] = field(default_factory=list)
    table5_sweeps: list[tuple[str, str, dict]] = field(default_factory=list)  # (source, dataset, sweep)
    cnn_tw: list[tuple[str, str, dict]] = field(default_factory=list)  # (source, model, record)
    cnn_ablations: list[tuple[str, str, dict]] = field(default_factory=list)
    read: list[tuple[str, str]] = field(default_factory=list)  # (file, what)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (what, command)


def _network(task: str, model: str | None) -> tuple[str, str]:
    if task == "textgcn" or (model or "").lower() == "textgcn":
        return "Text GCN", "GCN"
    if task in ("gcn", "pyg"):
        return NETWORK_NAMES.get(model or "", model or "GCN"), "GCN"
    return NETWORK_NAMES.get(model or "", model or task), "CNN"


def _layers(d: Any, path: Path, pre: Sequence[Any], macs: str = "macs", adds: str = "additions") -> list[dict]:
    layers = _get(d, ["layers"], path, list, pre)
    out = []
    for i, l in enumerate(layers):
        w = [*pre, "layers", i]
        out.append({"name": str(_get(l, ["name"], path, pre=w)), "kind": l.get("kind", ""),
                    "macs": _num(l, [macs], path, pre=w), "additions": _num(l, [adds], path, pre=w)})
    return out


def _spikes(d: Any, path: Path, keys: Sequence[Any], pre: Sequence[Any] = ()) -> dict[str, float]:
    sp = _get(d, keys, path, dict, pre)
    return {k: _num(sp, [k], path, pre=[*pre, *keys]) for k in sp}


def _parse_conversion_record(path: Path, rel: str) -> Conversion:
    rec = _read_json(path)
    if not isinstance(rec, dict):
        raise ValueError(f"{path}: a conversion record must be a JSON object")
    task = _get(rec, ["task"], path, str)
    model = rec.get("model")
    net, fam = _network(task, model)
    dataset = str(_get(rec, ["dataset"], path))
    T, Q = int(_num(rec, ["code", "T"], path)), _num(rec, ["code", "Q"], path)
    Tw = rec["code"].get("Tw")
    Tw = T if Tw is None else int(_num(rec, ["code", "Tw"], path))
    ann = _num(rec, ["ann_accuracy"], path)
    modes = _get(rec, ["snn"], path, dict)
    if not modes:
        raise ValueError(f"{path}: key 'snn' holds no mode")
    mode = "exact" if "exact" in modes else next(iter(modes))
    note = ""
    if "exact" in modes and "functional" in modes:
        same = _num(rec, ["snn", "exact", "accuracy"], path) == _num(rec, ["snn", "functional", "accuracy"], path)
        note = "exact = functional" if same else (
            f"functional {_num(rec, ['snn', 'functional', 'accuracy'], path):.2f} %")
    e = _get(rec, ["snn", mode, "energy_fp32"], path, dict)
    e8 = _get(rec, ["snn", mode, "energy_int8"], path)
    e8 = _num(rec, ["snn", mode, "energy_int8", "ratio"] if isinstance(e8, dict) else ["snn", mode, "energy_int8"],
              path)
    layers = _layers(e, path, ["snn", mode, "energy_fp32"])
    unit = e.get("counts_per")
    n_inputs = rec.get("test_images")
    if unit is None and fam == "CNN" and isinstance(n_inputs, int) and n_inputs > 0:
        # `spikegcn cnn` records sum the counts over all test images: per image here (ratios are unchanged)
        layers = [{**l, "macs": l["macs"] / n_inputs, "additions": l["additions"] / n_inputs} for l in layers]
        unit = "image"
        note = ", ".join(x for x in (note, f"{n_inputs} test images") if x)
    return Conversion(
        network=net, family=fam, dataset=dataset, source=rel, seed=rec.get("seed"), T=T, Q=Q, Tw=Tw, mode=mode,
        ann=ann, snn=_num(rec, ["snn", mode, "accuracy"], path), loss=_num(rec, ["snn", mode, "loss_points"], path),
        spikes=_spikes(rec, path, ["snn", mode, "spikes_per_neuron"]), layers=layers,
        e_fp32=_num(rec, ["snn", mode, "energy_fp32", "ratio"], path), e_int8=e8,
        e_fp32_approx=_num(e, ["ratio_approx"], path, optional=True),
        unit=f"per {unit or ('graph' if fam == 'GCN' else 'input')}", note=note)


def _parse_table5(path: Path, rel: str, res: Results) -> None:
    rec = _read_json(path)
    runs = _get(rec, ["runs"], path, dict)
    for key, r in runs.items():
        w = ["runs", key]
        T = int(_num(r, ["T"], path, pre=w))
        Tw = r.get("Tw")
        res.conversions.append(Conversion(
            network="Text GCN", family="GCN", dataset=str(_get(r, ["dataset"], path, pre=w)),
            source=f"{rel} › runs['{key}']", seed=r.get("seed"), T=T, Q=_num(r, ["Q"], path, pre=w),
            Tw=T if Tw is None else int(Tw), mode="functional", ann=_num(r, ["ann"], path, pre=w),
            snn=_num(r, ["snn"], path, pre=w), loss=_num(r, ["loss"], path, pre=w),
            spikes=_spikes(r, path, ["spikes_per_neuron"], w), layers=_layers(r, path, w),
            e_fp32=_num(r, ["energy_fp32"], path, pre=w), e_int8=_num(r, ["energy_int8"], path, optional=True),
            e_fp32_approx=_num(r, ["energy_fp32_approx"], path, optional=True), unit="per graph"))
    for ds, sw in (rec.get("sweep") or {}).items():
        w = ["sweep", ds]
        for k, p in _get(sw, ["points"], path, dict, w).items():
            for key in ("T", "Q", "loss"):
                _num(p, [key], path, pre=[*w, "points", k])
        _num(sw, ["ann"], path, pre=w)
        res.table5_sweeps.append((f"{rel} › sweep['{ds}']", ds, sw))
    res.read.append((rel, f"{len(runs)} Text GCN runs, Q/T sweeps of {len(rec.get('sweep') or {})} datasets"))


def _parse_cnn_tables(path: Path, rel: str, res: Results) -> None:
    rec = _read_json(path)
    models = _get(rec, ["models"], path, dict)
    for name, r in models.items():
        w = ["models", name]
        net, _ = _network("cnn", r.get("model", name))
        T = int(_num(r, ["T"], path, pre=w)) if "T" in r else int(_num(rec, ["T"], path))
        Q = _num(r, ["Q"], path, pre=w) if "Q" in r else _num(rec, ["Q"], path)
        layers = _layers(r, path, w, "macs_per_image", "additions_per_image")
        spikes = {}
        for i, l in enumerate(r["layers"]):
            if (_num(l, ["out_neurons_per_image"], path, pre=[*w, "layers", i]) or 0) > 0:
                spikes[l["name"]] = _num(l, ["spikes_per_neuron"], path, pre=[*w, "layers", i])
        e = _get(r, ["energy"], path, dict, w)
        sweep_n, test_n = r.get("sweep_images"), r.get("test_images")
        res.conversions.append(Conversion(
            network=net, family="CNN", dataset=str(_get(r, ["dataset"], path, pre=w)),
            source=f"{rel} › models['{name}']", seed=r.get("seed"), T=T, Q=Q, Tw=T, mode="functional",
            ann=_num(r, ["ann"], path, pre=w), snn=_num(r, ["snn"], path, pre=w), loss=_num(r, ["loss"], path, pre=w),
            spikes=spikes, layers=layers, e_fp32=_num(e, ["fp32"], path, pre=[*w, "energy"]),
            e_int8=_num(e, ["int8"], path, optional=True), e_fp32_approx=_num(e, ["fp32_approx"], path, optional=True),
            unit="per image", note=f"{test_n} test images" if test_n else ""))
        if r.get("tw_sweep"):
            for tw, v in _get(r, ["tw_sweep"], path, dict, w).items():
                if not str(tw).isdigit():
                    raise ValueError(f"{path}: key '{'.'.join(w)}.tw_sweep.{tw}' is not a wait time")
                _num(v, ["snn"], path, pre=[*w, "tw_sweep", tw])
            res.cnn_tw.append((f"{rel} › models['{name}'].tw_sweep", name,
                               {**r, "T": T, "Q": Q, "sweep_images": sweep_n, "test_images": test_n}))
        if isinstance(r.get("ablations"), dict):
            res.cnn_ablations.append((f"{rel} › models['{name}'].ablations", name, {**r, "T": T, "Q": Q}))
    res.read.append((rel, f"{len(models)} CNN models"))


def _check_sweep(path: Path, rec: Any) -> None:
    if not isinstance(rec, dict) or rec.get("kind") != "sweep":
        raise ValueError(f"{path}: not a sweep record (expected 'kind': 'sweep')")
    _get(rec, ["task"], path, str)
    _num(rec, ["ann_accuracy"], path)
    for k, p in _get(rec, ["points"], path, dict).items():
        w = ["points", k]
        for key in ("T", "Q", "Tw", "accuracy", "loss_points", "energy_int8"):
            _num(p, [key], path, pre=w)
        _get(p, ["mode"], path, str, w)
        _spikes(p, path, ["spikes_per_neuron"], w)
        _num(p, ["energy_fp32", "ratio"], path, pre=w)
        _layers(_get(p, ["energy_fp32"], path, dict, w), path, [*w, "energy_fp32"])
    if "activation_sample" in rec:
        vals = _get(rec, ["activation_sample", "values"], path, list)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise ValueError(f"{path}: key 'activation_sample.values' must hold numbers")


def _check_mape(path: Path, rec: Any) -> None:
    if not isinstance(rec, dict) or rec.get("kind") != "mape":
        raise ValueError(f"{path}: not a MAPE record (expected 'kind': 'mape')")
    qs = _get(rec, ["Q"], path, list)
    curves = _get(rec, ["mape_percent"], path, dict)
    for T, vals in curves.items():
        if not isinstance(vals, list) or len(vals) != len(qs):
            raise ValueError(f"{path}: key 'mape_percent.{T}' must be a list of {len(qs)} numbers (one per Q)")
        _num(rec, ["optimum", T, "Q"], path)
        _num(rec, ["optimum", T, "mape_percent"], path)
    for key in ("mu", "sigma"):
        _num(rec, [key], path)


def load_results(folder: str | Path = "results") -> Results:
    """Read every results record under ``folder`` (see the module docstring).

    Raises:
        FileNotFoundError: ``folder`` does not exist, or it holds no conversion or sweep record at all (the
            message names the commands that produce them).
        ValueError: a record cannot be parsed (the message names the file and the problem).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {folder} does not exist; produce records with "
                                f"`{PRODUCERS['textgcn']}`, `{PRODUCERS['cnn_tables']}` or `spikegcn sweep ...`")
    res = Results(folder)
    for sub in ("textgcn", "cnn"):
        files = sorted((folder / sub).glob("*.json"))
        for p in files:
            res.conversions.append(_parse_conversion_record(p, f"{sub}/{p.name}"))
        if files:
            res.read.append((f"{sub}/*.json", f"{len(files)} conversion record(s)"))
    if (folder / "textgcn_table5.json").is_file():
        _parse_table5(folder / "textgcn_table5.json", "textgcn_table5.json", res)
    if (folder / "cnn_tables.json").is_file():
        _parse_cnn_tables(folder / "cnn_tables.json", "cnn_tables.json", res)
    for p in sorted(folder.glob("sweep_*.json")):
        rec = _read_json(p)
        _check_sweep(p, rec)
        res.sweeps.append((p.name, rec))
        res.read.append((p.name, f"sweep of {rec['task']} {rec.get('dataset', '')} ({len(rec['points'])} points)"))
    for p in sorted(folder.glob("mape*.json")):
        rec = _read_json(p)
        _check_mape(p, rec)
        res.mapes.append((p.name, rec))
        res.read.append((p.name, f"MAPE curves for T = {', '.join(rec['mape_percent'])}"))

    # what is missing, and the command that produces it
    if not res.conversions and not res.sweeps:
        raise FileNotFoundError(
            f"no results records in {folder} (looked for textgcn/*.json, cnn/*.json, textgcn_table5.json, "
            f"cnn_tables.json, sweep_*.json): run `{PRODUCERS['textgcn']}`, `{PRODUCERS['cnn_tables']}` or "
            f"`{PRODUCERS['sweep_q']}` first")
    fams = {c.family for c in res.conversions} | {("CNN" if r["task"] == "cnn" else "GCN") for _, r in res.sweeps}
    if "GCN" not in fams:
        res.missing.append(("Text GCN records (textgcn/*.json or textgcn_table5.json)", PRODUCERS["textgcn"]))
    if "CNN" not in fams:
        res.missing.append(("CNN records (cnn_tables.json or cnn/*.json)", PRODUCERS["cnn_tables"]))
    if not (folder / "textgcn_table5.json").is_file():
        res.missing.append(("textgcn_table5.json (Table V over seeds)", PRODUCERS["table5"]))
    if not (folder / "cnn_tables.json").is_file():
        res.missing.append(("cnn_tables.json (CNN tables: Tw sweep, INT8, single-spike input, no-shift ablations)",
                            PRODUCERS["cnn_tables"]))
    if not any(any(p["Tw"] >= p["T"] for p in r["points"].values()) for _, r in res.sweeps) and not res.table5_sweeps:
        res.missing.append(("a Q/T sweep (sweep_*.json)", PRODUCERS["sweep_q"]))
    if not any(any(p["Tw"] < p["T"] for p in r["points"].values()) for _, r in res.sweeps) and not res.cnn_tw:
        res.missing.append(("a wait-time (Tw < T) sweep", PRODUCERS["sweep_tw"]))
    if not res.mapes:
        res.missing.append(("MAPE curves (mape*.json)", PRODUCERS["mape"]))
    samples = {("CNN" if r["task"] == "cnn" else "GCN") for _, r in res.sweeps if "activation_sample" in r}
    for fam, cmd in (("GCN", PRODUCERS["sweep_q"]), ("CNN", PRODUCERS["sweep_cnn"])):
        if fam not in samples:
            res.missing.append((f"calibrated activations of a {fam} hidden layer (Fig. 7; stored by a sweep)", cmd))
    return res


# ================================================================================================ formatting
def _f(v: float | None, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f"{v:.{nd}f}"


def _g(v: float) -> str:
    return f"{v:.3g}"


def _seed(s) -> str:
    return "–" if s is None else str(s)


def _spikes_cell(sp: dict[str, float]) -> str:
    if not sp:
        return "–"
    if len(sp) <= 4:
        return ", ".join(f"{k} {v:.3f}" for k, v in sp.items())
    v = list(sp.values())
    return (f"{len(v)} layers: min {min(v):.3f}, mean {statistics.mean(v):.3f}, max {max(v):.3f} "
            f"(per layer: figure and table below)")


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


# ================================================================================================ figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
                         "figure.dpi": 110, "savefig.dpi": 130, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _mape_by_T(mapes: Sequence[tuple[str, dict]]) -> dict[int, tuple[str, list, list, dict]]:
    """Finest curve per T among the Gaussian(0, 1), round-off records: ``T -> (file, Qs, values, optimum)``."""
    out: dict[int, tuple[str, list, list, dict]] = {}
    for name, rec in mapes:
        if rec.get("mu", 0.0) != 0.0 or rec.get("sigma", 1.0) != 1.0 or not rec.get("shift", True):
            continue
        for T, vals in rec["mape_percent"].items():
            T_i = int(T)
            if T_i not in out or len(rec["Q"]) > len(out[T_i][1]):
                out[T_i] = (name, rec["Q"], vals, rec["optimum"][T])
    return out


def plot_mape(mapes: Sequence[tuple[dict, str]], path: str | Path) -> Path:
    """Fig. 6: MAPE (%) vs Q, one line per T, the optimum marked. ``mapes``: ``(record, file name)`` pairs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ymax = 0.0
    srcs = [name for _, name in mapes]
    curves = sorted(((int(T), rec, vals) for rec, _ in mapes for T, vals in rec["mape_percent"].items()),
                    key=lambda c: c[0])
    cmap = plt.get_cmap("viridis")
    for i, (T, rec, vals) in enumerate(curves):
        c = cmap(0.9 * i / max(1, len(curves) - 1)) if len(curves) > 2 else f"C{i}"
        opt = rec["optimum"][str(T)]
        ax.plot(rec["Q"], vals, color=c, lw=1.8, label=f"T = {T}: optimum Q = {opt['Q']:g} "
                                                      f"({opt['mape_percent']:.2f} %)")
        ax.plot([opt["Q"]], [opt["mape_percent"]], "o", color=c, ms=7, mec="black", zorder=5)
        ymax = max(ymax, 3.0 * opt["mape_percent"])
    ax.set_xlabel("coding base Q")
    ax.set_ylabel("MAPE of single-spike encoding (%)")
    ax.set_ylim(0, min(100.0, max(ymax, 20.0)))
    ax.set_title("Eq. 5: encoding error vs base (Gaussian activations, μ = 0, σ = 1)")
    ax.legend(loc="upper right", title="window length (● = optimum)")
    fig.text(0.01, 0.01, "source: " + ", ".join(srcs), fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_loss_vs_q(series: list[dict], mape: dict[int, tuple], path: Path, title: str, source: str) -> Path:
    """Fig. 9: accuracy loss (pp, left axis) vs Q for each T, with the MAPE curve of that T (%, right axis).

    ``series``: dicts with ``label``, ``T``, ``Q`` (list), ``loss`` (list)."""
    plt = _plt()
    Ts = sorted({s["T"] for s in series})
    n = len(Ts)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = sorted({s["label"] for s in series}, key=lambda s: [x["label"] for x in series].index(s))
    handles = {}
    mape_handle = None
    for ax, T in zip(axes.flat, Ts):
        for s in series:
            if s["T"] != T:
                continue
            c = colors[labels.index(s["label"]) % len(colors)]
            order = np.argsort(s["Q"])
            (h,) = ax.plot(np.asarray(s["Q"])[order], np.asarray(s["loss"])[order], "o-", color=c, ms=4, lw=1.6)
            handles[s["label"]] = h
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_title(f"T = {T}")
        ax.set_xlabel("coding base Q")
        ax.set_ylabel("accuracy loss ANN − SNN (pp)")
        if T in mape:
            _, qs, vals, opt = mape[T]
            qmin, qmax = ax.get_xlim()
            sel = [(q, v) for q, v in zip(qs, vals) if qmin <= q <= qmax]
            ax2 = ax.twinx()
            ax2.grid(False)
            (mape_handle,) = ax2.plot([q for q, _ in sel], [v for _, v in sel], "--", color="0.35", lw=1.4)
            ax2.axvline(opt["Q"], color="0.35", ls=":", lw=1)
            ax2.set_ylabel("MAPE, Eq. 5 (%)", color="0.35")
            ax2.tick_params(axis="y", colors="0.35")
            ax2.set_ylim(0, None)
        else:
            ax.text(0.5, 0.97, f"no MAPE curve for T = {T}\n(spikegcn mape --T {T})", transform=ax.transAxes,
                    ha="center", va="top", fontsize=8, color="0.4")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    hs = list(handles.values()) + ([mape_handle] if mape_handle is not None else [])
    ls = [f"loss: {k}" for k in handles] + (["MAPE (Eq. 5), dotted line = its optimum"] if mape_handle else [])
    fig.legend(hs, ls, loc="lower center", bbox_to_anchor=(0.5, 0.02), ncol=min(3, len(hs)), frameon=False)
    fig.suptitle(title)
    fig.text(0.01, 0.005, f"source: {source}", fontsize=7, color="0.4")
    nrow_leg = math.ceil(len(hs) / 3)
    fig.tight_layout(rect=(0, 0.05 + 0.05 * nrow_leg / rows, 1, 0.97))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_tw(series: list[dict], path: Path) -> Path:
    """Table VIII as a figure: SNN accuracy (%) vs wait time Tw, one panel per network, ANN dashed."""
    plt = _plt()
    n = len(series)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.5 * rows), squeeze=False)
    for ax, s in zip(axes.flat, series):
        tw = sorted(s["acc"])
        ax.plot(tw, [s["acc"][t] for t in tw], "o-", lw=1.8, ms=5, label="SNN (exact mode; Tw ≥ T functional)")
        ax.axhline(s["ann"], color="black", ls="--", lw=1.2, label=f"ANN {s['ann']:.2f} %")
        ax.axvline(s["T"], color="0.6", ls=":", lw=1, label=f"Tw = T = {s['T']}")
        vals = [s["acc"][t] for t in tw] + [s["ann"]]
        lo, hi = min(vals), max(vals)
        pad = max(0.5, (6.0 - (hi - lo)) / 2)  # at least 6 pp shown: a few test examples must not look like a trend
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("wait time Tw (phases)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{s['label']}\nT = {s['T']}, Q = {s['Q']:g}", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("SNN accuracy vs wait time Tw (exact phase-by-phase simulation for Tw < T)")
    fig.text(0.01, 0.005, "source: " + "; ".join(sorted({s["source"] for s in series})), fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_encoding(values: Sequence[float], T: int, Q: float, title: str, source: str, path: Path) -> dict:
    """Fig. 7: encoded value vs true activation (log-log), with the threshold shift (round-off) and without it
    (floor). Activations that do not fire are drawn on the bottom line. Returns the sample's error statistics."""
    import torch

    from .coding import PhaseCode, quantize

    plt = _plt()
    a = torch.tensor([v for v in values if v > 0], dtype=torch.float64)
    out = {}
    code = PhaseCode(T, Q)
    lo = min(float(a.min()), code.min_value) / 3
    zero_y = lo * 1.6
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.6), sharex=True, sharey=True)
    for ax, shift in zip(axes, (True, False)):
        c = PhaseCode(T, Q, shift=shift)
        q = quantize(a, c)
        fire = q > 0
        rel = (q - a) / a
        out[shift] = {"mape_percent": float(rel.abs().mean() * 100), "bias_percent": float(rel.mean() * 100),
                      "underflow_percent": float((~fire).double().mean() * 100),
                      "mape_firing_percent": float(rel[fire].abs().mean() * 100) if fire.any() else float("nan"),
                      "bias_firing_percent": float(rel[fire].mean() * 100) if fire.any() else float("nan")}
        color = "C0" if shift else "C3"
        ax.scatter(a[fire].numpy(), q[fire].numpy(), s=5, alpha=0.35, color=color, rasterized=True,
                   label=f"fires: encoded value ({int(fire.sum())})")
        ax.scatter(a[~fire].numpy(), np.full(int((~fire).sum()), zero_y), s=5, alpha=0.35, color="0.5",
                   marker="x", rasterized=True, label=f"no spike, â = 0 ({int((~fire).sum())})")
        ax.plot([lo, 1.2], [lo, 1.2], "k--", lw=1, label="ideal: encoded = true")
        ax.axvline(c.underflow_bound, color="0.4", ls=":", lw=1,
                   label=f"underflow bound {c.underflow_bound:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, 1.2)
        ax.set_ylim(lo, 1.2)
        ax.set_title("with threshold shift (round-off, Eq. 4)" if shift else "without shift (floor, Eq. 3)")
        ax.set_xlabel("true normalised activation a = y / λ")
        o = out[shift]
        ax.text(0.03, 0.97, f"firing: mean |â − a| / a = {o['mape_firing_percent']:.1f} %,\n"
                            f"            mean (â − a) / a = {o['bias_firing_percent']:+.1f} %\n"
                            f"no spike: {o['underflow_percent']:.1f} % of the sample",
                transform=ax.transAxes, va="top", fontsize=9, bbox=dict(boxstyle="round", fc="white", ec="0.7"))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    axes[0].set_ylabel("encoded value â (× on the bottom line: â = 0)")
    fig.suptitle(f"{title}\nT = {T}, Q = {Q:g}: encoded vs true activation", fontsize=11)
    fig.text(0.01, 0.01, f"source: {source}", fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return out


def plot_spikes(convs: list[Conversion], path: Path) -> Path:
    """Spikes per neuron of every spiking layer, one panel per network."""
    plt = _plt()
    n = len(convs)
    widths = [max(3.2, 0.32 * len(c.spikes) + 1.6) for c in convs]
    fig, axes = plt.subplots(1, n, figsize=(min(sum(widths) + 0.5, 18), 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, c in zip(axes.flat, convs):
        names = list(c.spikes)
        vals = [c.spikes[k] for k in names]
        color = "C1" if c.family == "GCN" else "C0"
        ax.bar(range(len(vals)), vals, color=color)
        ax.set_xticks(range(len(vals)))
        rot = len(names) > 4 or max(len(n) for n in names) > 8
        ax.set_xticklabels(names, rotation=55 if rot else 0, ha="right" if rot else "center",
                           fontsize=8 if len(names) > 8 else 9)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("spikes per neuron")
        ax.set_title(f"{c.label}\nT = {c.T}, Q = {c.Q:g}, Tw = {c.Tw}", fontsize=10)
    fig.suptitle("Spikes per neuron per layer (one-spike neurons: at most 1)")
    fig.text(0.01, 0.01, "source: " + "; ".join(c.source for c in convs), fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return path


# ================================================================================================ report
def _representatives(convs: list[Conversion]) -> list[Conversion]:
    """One conversion per (network, dataset): closest to T = 16, Q = 1.3, Tw = T, seed 0."""
    best: dict[tuple[str, str], Conversion] = {}

    def score(c: Conversion):
        return (abs(c.T - 16) + abs(c.Q - 1.3) * 10 + (c.Tw < c.T) * 5, 0 if c.seed in (0, None) else 1,
                0 if "›" not in c.source else 1)

    for c in convs:
        k = (c.network, c.dataset)
        if k not in best or score(c) < score(best[k]):
            best[k] = c
    return list(best.values())


def _sweep_conversions(sweeps: list[tuple[str, dict]], have: set[tuple[str, str]]) -> list[Conversion]:
    """Rows for networks known only from a sweep: its point closest to T = 16, Q = 1.3, Tw = T."""
    out = []
    for name, rec in sweeps:
        net, fam = _network(rec["task"], rec.get("model"))
        ds = str(rec.get("dataset", ""))
        if (net, ds.lower()) in have or not rec["points"]:
            continue
        k, p = min(rec["points"].items(),
                   key=lambda kv: (abs(kv[1]["T"] - 16) + abs(kv[1]["Q"] - 1.3) * 10 + (kv[1]["Tw"] < kv[1]["T"]) * 5))
        out.append(Conversion(
            network=net, family=fam, dataset=ds, source=f"{name} › points['{k}']", seed=rec.get("seed"), T=p["T"],
            Q=p["Q"], Tw=p["Tw"], mode=p["mode"], ann=p.get("ann_accuracy", rec["ann_accuracy"]), snn=p["accuracy"],
            loss=p["loss_points"], spikes=dict(p["spikes_per_neuron"]),
            layers=[{"name": l["name"], "kind": l.get("kind", ""), "macs": l["macs"], "additions": l["additions"]}
                    for l in p["energy_fp32"]["layers"]],
            e_fp32=p["energy_fp32"]["ratio"], e_int8=p.get("energy_int8"),
            e_fp32_approx=p["energy_fp32"].get("ratio_approx"),
            unit=f"per {p['energy_fp32'].get('counts_per', 'graph' if fam == 'GCN' else 'input')}",
            note=f"{rec['meta']['test_size']} test examples" if (rec.get("meta") or {}).get("test_size") else ""))
    return out


def build_report(results: str | Path = "results", out: str | Path | None = None) -> Path:
    """Write ``report.md`` and its figures; returns the path of the report.

    Raises:
        FileNotFoundError: no results folder, or no record at all (names the producing commands).
        ValueError: a record cannot be parsed (names the file and the problem).
    """
    res = load_results(results)
    out = Path(out) if out is not None else res.folder / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    figdir = out.parent
    stem = out.stem
    figs: list[Path] = []

    def fig_path(name: str) -> Path:
        p = figdir / f"{stem}_{name}.png"
        figs.append(p)
        return p

    def rel(p: Path) -> str:
        return p.name

    have = {(c.network, c.dataset.lower()) for c in res.conversions}
    convs = res.conversions + _sweep_conversions(res.sweeps, have)
    convs.sort(key=lambda c: (c.family != "CNN", c.network, c.dataset.lower(), c.T, c.Q, c.Tw,
                              -1 if c.seed is None else c.seed, c.source))
    mape = _mape_by_T(res.mapes)

    L: list[str] = [
        "# One-spike conversion: CNN vs GCN", "",
        f"Generated by `spikegcn report --results {res.folder}` on "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}. Every number below is read from the results "
        "record named next to it (file › key, relative to the results folder) with that record's T, Q, Tw and seed. "
        "Derived numbers say how they were derived: sums over a record's layers, ratios of two recorded numbers, "
        "latency from `spikegcn.energy.latency` with the record's T and Tw, and errors of the encoder applied to "
        "recorded activations.", "",
        "## Inputs", "",
    ]
    L += [f"- `{f}`: {what}" for f, what in res.read]
    if res.missing:
        L += ["", "**Missing** (the sections that need them say so; the command that produces each):", ""]
        L += [f"- {what}: `{cmd}`" for what, cmd in res.missing]

    # ---------------------------------------------------------------------------------------- 1. table
    L += ["", "## 1. CNN vs GCN: accuracy, spikes, operations, energy, latency", "",
          "SNN accuracy is the exact (phase-by-phase) simulation where the record has it, else the functional mode "
          "(identical when Tw ≥ T). Loss = ANN − SNN in percentage points (pp).", "",
          "| family | network · dataset | record | seed | T | Q | Tw | mode | ANN % | SNN % | loss (pp) | note |",
          "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for c in convs:
        L.append(f"| {c.family} | {c.label} | `{c.source}` | {_seed(c.seed)} | {c.T} | {c.Q:g} | {c.Tw} | {c.mode} | "
                 f"{c.ann:.2f} | {c.snn:.2f} | {c.loss:.2f} | {c.note} |")
    L += ["", f"Cost of one inference (a CNN: one image; Text GCN: the whole graph, all documents at once). "
              f"Additions = spikes × fan-out (exact); E = E_ANN/E_SNN (Eq. 6) with E_MAC/E_ADD = 4.6/0.9 pJ (FP32) "
              f"and 0.23/0.03 pJ (INT8); neuron updates, pooling and memory traffic are not counted. L = neuron "
              f"layers incl. the output layer (residual shortcuts are synapses, not layers). Latency in phases: one "
              f"input (L−1)·Tw + T; N = {N_PIPELINED} pipelined inputs issued every T phases: "
              f"(N−1)·T + (L−1)·Tw + T.", "",
          "| network · dataset | record | T | Q | Tw | spikes per neuron (per layer) | additions / MACs | "
          "adds per MAC | "
          "E FP32 | E INT8 | L | latency 1 input | latency N = 100 (per input) |",
          "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in convs:
        lat1, latN = c.latency(1), c.latency(N_PIPELINED)
        L.append(f"| {c.label} | `{c.source}` | {c.T} | {c.Q:g} | {c.Tw} | {_spikes_cell(c.spikes)} | "
                 f"{_g(c.additions)} / {_g(c.macs)} | {c.additions / c.macs:.3f} | {_f(c.e_fp32)} | {_f(c.e_int8)} | "
                 f"{c.L} | {lat1} | {latN} ({latN / N_PIPELINED:.2f}) |")
    # observations, derived from the rows above
    obs = []
    for fam in ("GCN", "CNN"):
        rows = [c for c in convs if c.family == fam and c.T == 16 and abs(c.Q - 1.3) < 1e-9 and c.Tw >= c.T]
        if rows:
            apm = [c.additions / c.macs for c in rows]

            def rng(vals, nd, sep="–"):
                lo, hi = min(vals), max(vals)
                return f"{lo:.{nd}f}" if f"{lo:.{nd}f}" == f"{hi:.{nd}f}" else f"{lo:.{nd}f}{sep}{hi:.{nd}f}"

            obs.append(f"- {fam} rows at T = 16, Q = 1.3, Tw = T ({len(rows)}): adds per MAC {rng(apm, 3)}, "
                       f"E FP32 {rng([c.e_fp32 for c in rows], 2)}, loss {rng([c.loss for c in rows], 2, ' to ')} pp.")
    if obs:
        L += ["", "Ranges over the rows above (E FP32 ≈ 5.11 / adds-per-MAC, since E_MAC/E_ADD = 5.11):", ""] + obs
        L += ["", "Where the operations are (one record per network and dataset):", ""]
        for c in _representatives(convs):
            if not c.macs:
                continue
            top = max(c.layers, key=lambda l: l["macs"])
            hi = max((l for l in c.layers if l["macs"]), key=lambda l: l["additions"] / l["macs"])
            L.append(f"- {c.label} (`{c.source}`): {100 * top['macs'] / c.macs:.0f} % of the MACs are in layer "
                     f"{top['name']}, at {top['additions'] / top['macs']:.3f} additions per MAC there "
                     f"({c.additions / c.macs:.3f} over the whole network); most additions per MAC: "
                     f"{hi['name']} ({hi['additions'] / hi['macs']:.3f}, {100 * hi['additions'] / c.additions:.0f} % "
                     f"of all additions).")
    # per-layer tables for long networks
    long_ = [c for c in _representatives(convs) if len(c.spikes) > 4]
    for c in long_:
        L += ["", f"Per layer, {c.label} (`{c.source}`, T = {c.T}, Q = {c.Q:g}, Tw = {c.Tw}; {c.unit}):", "",
              "| layer | kind | spikes per neuron | MACs | additions | adds per MAC |", "|---|---|---:|---:|---:|---:|"]
        for l in c.layers:
            sp = f"{c.spikes[l['name']]:.3f}" if l["name"] in c.spikes else "–"
            apm = f"{l['additions'] / l['macs']:.3f}" if l["macs"] else "–"
            L.append(f"| {l['name']} | {l.get('kind', '')} | {sp} | {_g(l['macs'])} | {_g(l['additions'])} | {apm} |")

    # ---------------------------------------------------------------------------------------- 2. spikes figure
    reps = [c for c in _representatives(convs) if c.spikes]
    reps.sort(key=lambda c: (c.family != "GCN", c.dataset.lower() == "demo", c.dataset.lower() != "r8", c.label))
    reps = [c for c in reps if c.family == "GCN"][:3] + [c for c in reps if c.family == "CNN"][:2]
    L += ["", "## 2. Spikes per layer", ""]
    if reps:
        p = plot_spikes(reps, fig_path("spikes_per_layer"))
        L += [f"![spikes per neuron per layer]({rel(p)})", "",
              "One record per network and dataset (closest to T = 16, Q = 1.3, Tw = T, seed 0): " +
              "; ".join(f"{c.label}: `{c.source}`" for c in reps) + "."]
    else:
        L += ["No record with spikes per layer."]

    # ---------------------------------------------------------------------------------------- 3. base Q
    L += ["", "## 3. Coding base Q: encoding error (Eq. 5) and accuracy loss", ""]
    if res.mapes:
        L += ["| T | optimum Q | MAPE at optimum (%) | Q grid | record |", "|---:|---:|---:|---|---|"]
        rows = sorted(((int(T), name, rec, opt) for name, rec in res.mapes for T, opt in rec["optimum"].items()),
                      key=lambda r: (r[0], r[1]))
        for T, name, rec, opt in rows:
            qs = rec["Q"]
            grid = f"{qs[0]:g} … {qs[-1]:g} ({len(qs)} values)"
            L.append(f"| {T} | {opt['Q']:g} | {opt['mape_percent']:.2f} | {grid} | `{name}` "
                     f"(μ = {rec['mu']:g}, σ = {rec['sigma']:g}) |")
        p = plot_mape([(rec, name) for name, rec in res.mapes if rec.get("mu", 0) == 0 and rec.get("sigma", 1) == 1
                       and rec.get("shift", True)] or [(r, n) for n, r in res.mapes], fig_path("fig6_mape"))
        L += ["", f"![MAPE vs Q]({rel(p)})"]
    else:
        L += [f"No MAPE record: `{PRODUCERS['mape']}`."]
    q_sources = []
    for name, rec in res.sweeps:
        pts = [p for p in rec["points"].values() if p["Tw"] >= p["T"]]
        if len({p["Q"] for p in pts}) >= 2:
            q_sources.append((name, rec, pts))
    if not q_sources and not res.table5_sweeps:
        L += ["", f"No Q sweep: `{PRODUCERS['sweep_q']}`."]
    for name, rec, pts in q_sources:
        net, _ = _network(rec["task"], rec.get("model"))
        label = f"{net} · {rec.get('dataset', '')}"
        n_test = (rec.get("meta") or {}).get("test_size")
        L += ["", f"### {label}: loss vs Q (`{name}`, seed {_seed(rec.get('seed'))}, ANN "
                  f"{rec['ann_accuracy']:.2f} %, functional mode, Tw = T)", ""]
        meta = rec.get("meta") or {}
        if meta.get("model_source"):
            L += [f"Model: {meta['model_source']}" + (f"; {meta['calib_images']} calibration images"
                                                       if meta.get("calib_images") else "") + ".", ""]
        if n_test:
            L += [f"{n_test} test examples: one example is {100 / n_test:.3f} pp (negative loss: the SNN got more "
                  f"examples right than the ANN).", ""]
        L += _grid_table(pts, "loss_points", "loss (pp)")
        L += ["", "E_ANN/E_SNN (FP32) at the same points:", ""]
        L += _grid_table(pts, ("energy_fp32", "ratio"), "E FP32")
        best = _best_lines(pts, mape)
        L += [""] + best
        series = [{"label": label, "T": T, "Q": [p["Q"] for p in pts if p["T"] == T],
                   "loss": [p["loss_points"] for p in pts if p["T"] == T]} for T in sorted({p["T"] for p in pts})]
        p = plot_loss_vs_q(series, mape, fig_path(f"fig9_loss_vs_q_{_slug(Path(name).stem)}"),
                           f"{label}: accuracy loss vs Q, with the Eq. 5 MAPE of the same T",
                           f"{name} (seed {_seed(rec.get('seed'))})" + (
                               f"; MAPE: {', '.join(sorted({m[0] for m in mape.values()}))}" if mape else ""))
        L += ["", f"![loss vs Q]({rel(p)})"]
    if res.table5_sweeps:
        L += ["", "### Text GCN, Table V benchmark sweeps: loss vs Q (functional mode, Tw = T)", ""]
        series = []
        for src, ds, sw in res.table5_sweeps:
            pts = [dict(p, loss_points=p["loss"]) for p in sw["points"].values()]
            L += [f"**{ds}** (`{src}`, seed {_seed(sw.get('seed'))}, ANN {sw['ann']:.2f} %), loss (pp):", ""]
            L += _grid_table(pts, "loss_points", "loss (pp)") + [""]
            L += _best_lines(pts, mape) + [""]
            for T in sorted({p["T"] for p in pts}):
                series.append({"label": f"Text GCN · {ds}", "T": T, "Q": [p["Q"] for p in pts if p["T"] == T],
                               "loss": [p["loss_points"] for p in pts if p["T"] == T]})
        keepT = sorted({s["T"] for s in series} & set(mape)) or sorted({s["T"] for s in series})
        series = [s for s in series if s["T"] in keepT]
        p = plot_loss_vs_q(series, mape, fig_path("fig9_loss_vs_q_table5"),
                           "Text GCN (Table V benchmark): accuracy loss vs Q, with the Eq. 5 MAPE",
                           "; ".join(src for src, _, _ in res.table5_sweeps))
        L += [f"![loss vs Q, Table V sweeps]({rel(p)})", "",
              f"(Panels for T = {', '.join(map(str, keepT))}: the T values that have a MAPE curve.)"]

    # ---------------------------------------------------------------------------------------- 4. Tw
    L += ["", "## 4. Wait time Tw (Table VIII)", ""]
    tw_series = []
    for name, rec in res.sweeps:
        net, _ = _network(rec["task"], rec.get("model"))
        by_tq: dict[tuple[int, float], dict[int, dict]] = {}
        for p in rec["points"].values():
            by_tq.setdefault((p["T"], p["Q"]), {})[p["Tw"]] = p
        for (T, Q), d in by_tq.items():
            if any(tw < T for tw in d):
                tw_series.append({"label": f"{net} · {rec.get('dataset', '')}", "T": T, "Q": Q,
                                  "acc": {tw: p["accuracy"] for tw, p in d.items()},
                                  "ann": rec["ann_accuracy"], "source": name, "seed": rec.get("seed"),
                                  "note": ""})
    for src, model, r in res.cnn_tw:
        net, _ = _network("cnn", model)
        acc = {int(tw): v["snn"] for tw, v in r["tw_sweep"].items()}
        subset = r.get("sweep_images") and r.get("test_images") and r["sweep_images"] != r["test_images"]
        note = (f"sweep on {r['sweep_images']} of {r['test_images']} test images; ANN on all" if subset else "")
        tw_series.append({"label": f"{net} · {r.get('dataset', '')}", "T": r["T"], "Q": r["Q"], "acc": acc,
                          "ann": r["ann"], "source": src, "seed": r.get("seed"), "note": note})
    if tw_series:
        tws = sorted({t for s in tw_series for t in s["acc"]})
        L += ["SNN test accuracy (%) by wait time; exact mode for Tw < T, functional (= exact) at Tw ≥ T.", "",
              "| network · dataset | record | seed | T | Q | " + " | ".join(f"Tw = {t}" for t in tws)
              + " | ANN | note |",
              "|---|---|---:|---:|---:|" + "---:|" * len(tws) + "---:|---|"]
        for s in tw_series:
            L.append(f"| {s['label']} | `{s['source']}` | {_seed(s['seed'])} | {s['T']} | {s['Q']:g} | " +
                     " | ".join(f"{s['acc'][t]:.2f}" if t in s["acc"] else "–" for t in tws) +
                     f" | {s['ann']:.2f} | {s['note']} |")
        for s in tw_series:
            full = s["acc"].get(s["T"])
            if full is None:
                continue
            ok = [t for t in sorted(s["acc"]) if s["acc"][t] >= full - 0.1]
            if ok and ok[0] < s["T"]:
                L.append(f"\n{s['label']} (`{s['source']}`): the first Tw whose accuracy is within 0.1 pp of the "
                         f"Tw = T accuracy ({full:.2f} %) or above it is Tw = {ok[0]} ({s['acc'][ok[0]]:.2f} %); "
                         f"latency for one input drops from {_lat(s, s['T'], convs)} to {_lat(s, ok[0], convs)} "
                         f"phases.")
            elif ok:
                L.append(f"\n{s['label']} (`{s['source']}`): no Tw < T in the sweep stays within 0.1 pp of the "
                         f"Tw = T accuracy ({full:.2f} %).")
        p = plot_tw(tw_series, fig_path("fig_tw"))
        L += ["", f"![accuracy vs Tw]({rel(p)})"]
    else:
        L += [f"No wait-time sweep: `{PRODUCERS['sweep_tw']}` (Text GCN) or `{PRODUCERS['cnn_tables']}` (CNNs)."]

    # ---------------------------------------------------------------------------------------- 5. Fig. 7
    L += ["", "## 5. Encoded vs true activations, with and without the threshold shift (Fig. 7)", "",
          "A sample of one hidden layer's calibrated activations a = y/λ (λ = the converter's per-channel max), "
          "stored in the sweep record, encoded with one spike (`coding.quantize`). The errors are those of the "
          "encoder on that sample (derived)."]
    have_sample = False
    for name, rec in res.sweeps:
        smp = rec.get("activation_sample")
        if not smp or not smp.get("values"):
            continue
        have_sample = True
        net, _ = _network(rec["task"], rec.get("model"))
        label = f"{net} · {rec.get('dataset', '')}"
        pts = list(rec["points"].values())
        ref = min(pts, key=lambda p: abs(p["T"] - 16) + abs(p["Q"] - 1.3) * 10)
        T, Q = ref["T"], ref["Q"]
        p = fig_path(f"fig7_encoding_{_slug(Path(name).stem)}")
        err = plot_encoding(smp["values"], T, Q, f"{label}, layer {smp.get('layer', '?')}",
                            f"{name} › activation_sample ({len(smp['values'])} of {smp.get('n_activations', '?')} "
                            f"activations, seed {_seed(rec.get('seed'))})", p)
        L += ["", f"**{label}** (`{name}` › activation_sample, layer {smp.get('layer', '?')}, "
                  f"{len(smp['values'])} positive values sampled from {smp.get('n_activations', '?')} activations, "
                  f"{100 * smp.get('fraction_zero', float('nan')):.1f} % of which are 0; T = {T}, Q = {Q:g}):", "",
              "| encoder | mean abs. relative error, firing | mean signed relative error, firing | no spike "
              "(â = 0) | mean abs. relative error, all (no spike = 100 %) |",
              "|---|---:|---:|---:|---:|"]
        for shift, nm in ((True, "round-off (threshold shift)"), (False, "floor (no shift)")):
            e = err[shift]
            L.append(f"| {nm} | {e['mape_firing_percent']:.2f} % | {e['bias_firing_percent']:+.2f} % | "
                     f"{e['underflow_percent']:.2f} % | {e['mape_percent']:.2f} % |")
        L += ["", f"![encoded vs true]({rel(p)})"]
    if not have_sample:
        L += ["", f"No activation sample in any sweep record: `{PRODUCERS['sweep_q']}`."]
    abl = [(src, m, r) for src, m, r in res.cnn_ablations if isinstance(r["ablations"].get("no_shift"), dict)]
    if abl:
        L += ["", "Whole-network effect of the shift (functional mode, Tw = T):", "",
              "| network | record | T | Q | SNN % with shift | SNN % without shift | ANN % |",
              "|---|---|---:|---:|---:|---:|---:|"]
        for src, m, r in abl:
            L.append(f"| {_network('cnn', m)[0]} | `{src}` | {r['T']} | {r['Q']:g} | {r['snn']:.2f} | "
                     f"{r['ablations']['no_shift']['snn']:.2f} | {r['ann']:.2f} |")
    if not any(r["task"] == "cnn" and r.get("activation_sample") for _, r in res.sweeps):
        L += ["", f"No CNN activation sample: `{PRODUCERS['sweep_cnn']}` stores one."]

    L += ["", "## Figures", ""] + [f"- `{p.name}`" for p in figs]
    out.write_text("\n".join(L) + "\n")
    return out


def _lat(s: dict, tw: int, convs: list[Conversion]) -> str:
    from .energy import latency

    c = next((c for c in convs if c.label == s["label"]), None)
    if c is None:
        return "?"
    return str(latency(s["T"], tw, c.L, 1))


def _grid_table(pts: list[dict], key, what: str) -> list[str]:
    Ts = sorted({p["T"] for p in pts})
    Qs = sorted({p["Q"] for p in pts})
    get = (lambda p: p[key[0]][key[1]]) if isinstance(key, tuple) else (lambda p: p[key])  # noqa: E731
    cell = {(p["T"], p["Q"]): get(p) for p in pts}
    lines = [f"| {what}: T \\ Q | " + " | ".join(f"{q:g}" for q in Qs) + " |", "|---|" + "---:|" * len(Qs)]
    for T in Ts:
        lines.append(f"| {T} | " + " | ".join(_f(cell.get((T, q))) for q in Qs) + " |")
    return lines


def _best_lines(pts: list[dict], mape: dict) -> list[str]:
    out = []
    best = min(pts, key=lambda p: (p["loss_points"], p["T"]))
    few = min((p for p in pts if p["loss_points"] <= best["loss_points"] + 0.1),
              key=lambda p: (p["T"], p["loss_points"]))
    out.append(f"- Smallest loss: T = {best['T']}, Q = {best['Q']:g} ({best['loss_points']:.2f} pp). Fewest phases "
               f"within 0.1 pp of it: T = {few['T']}, Q = {few['Q']:g} ({few['loss_points']:.2f} pp"
               + (f", E FP32 {few['energy_fp32']['ratio']:.2f}" if isinstance(few.get("energy_fp32"), dict) else
                  (f", E FP32 {few['energy_fp32']:.2f}" if "energy_fp32" in few else "")) + ").")
    for T in sorted({p["T"] for p in pts}):
        row = [p for p in pts if p["T"] == T]
        b = min(row, key=lambda p: p["loss_points"])
        ties = sorted(p["Q"] for p in row if p["loss_points"] <= b["loss_points"] + 1e-9)
        m = mape.get(T)
        tail = f"; Eq. 5 optimum Q = {m[3]['Q']:g} (`{m[0]}`)" if m else ""
        out.append(f"- T = {T}: lowest loss {b['loss_points']:.2f} pp at Q = {', '.join(f'{q:g}' for q in ties)}"
                   f"{tail}.")
    return out
