"""Reading and checking the results records the report is built from (see :mod:`spikegcn.experiments.report`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, overload

__all__ = ["Conversion", "Results", "load_results", "PRODUCERS", "NETWORK_NAMES"]

PRODUCERS = {
    "textgcn": "spikegcn textgcn --dataset R8",
    "cnn": "spikegcn cnn --model resnet20",
    "table5": "python benchmarks/textgcn_table5.py (in a source checkout)",
    "cnn_tables": "python benchmarks/cnn_tables.py (in a source checkout)",
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


@overload
def _num(d: Any, keys: Sequence[Any], path: Path, optional: Literal[False] = ..., pre: Sequence[Any] = ()) -> float:
    ...


@overload
def _num(d: Any, keys: Sequence[Any], path: Path, optional: bool, pre: Sequence[Any] = ()) -> float | None:
    ...


def _num(d: Any, keys: Sequence[Any], path: Path, optional: bool = False, pre: Sequence[Any] = ()) -> float | None:
    """The number at ``d[k0][k1]...`` as a float; with ``optional``, ``None`` where the key is missing or null."""
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
        from ...energy import latency

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


# ================================================================================================ selection
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
