"""SpikingJelly 2.0 ann2snn vs spikegcn's one-spike conversion: CIFAR-10 ResNet-20, accuracy against spikes per image.

Both converters get the same trained ResNet-20, the same calibration images (``--calib`` random training images,
seed 0, as in ``benchmarks/cnn_tables.py``) and the same test images (``--limit`` evenly spaced, class-balanced
CIFAR-10 JPEG test images, as there).

spikegcn: ``convert(model, calib, PhaseCode(T, Q), mode="functional")`` (exact at Tw = T) for every ``--codes`` entry.
Its input layer is a binary multi-spike phase encoder, so it has *input spikes* (reported separately) besides the
*hidden spikes* of its neuron layers (every ReLU, plus the 64 average-pool re-encoding neurons).

SpikingJelly: ``ann2snn.Converter(recipe=...)`` (2.0 API: ``Converter`` takes a *recipe*; the 1.x
``Converter(mode=..., dataloader=...)`` is now ``RateCodingRecipe(dataloader=..., mode=...)``). ``--modes`` entries:

* ``max``, ``99.9%``, ``99.99%``, a float in (0, 1] such as ``0.5``: ``RateCodingRecipe(mode=...)``, layer-wise
  thresholds (the EMA, momentum 0.1, over ``--calib-batch`` calibration batches of the batch max / percentile /
  fraction of the max), soft-reset ``IFNode``;
* ``robust``: ``RateCodingRecipe(mode="99.9%", channel_wise=True, half_threshold=True)``, the "robust" setting of
  SpikingJelly's own ImageNet example (channel-wise 99.9th percentiles, membrane initialised at half threshold);
* ``ltb``: ``LocalThresholdBalancingRecipe`` (Bu et al., CVPR 2025), channel-wise thresholds learnt by its
  overflow rule, half-threshold IF neurons. Its rule moves a threshold a little per calibration batch, so it gets
  ``--ltb-calib-batch`` images per batch and ``--ltb-passes`` passes over the calibration images (with 20 batches of
  100 its clipped ANN collapses to a few per cent).

SpikingJelly feeds the analog image into ``conv1`` at every time step, so its only spikes are those of its IF
neurons (one layer per ReLU): hidden spikes, counted with forward hooks on every IF node, summed over all the steps
simulated. Each configuration is simulated once up to the largest step and read out at *every* step t, two ways:
summing the outputs of all t steps (SpikingJelly's ``val``) and SpikingJelly's delayed readout (outputs summed from
``ann2snn.estimate_delay_start(snn, calib, T=t)`` on, as in its examples; the raw delay is estimated once and the
library's clamping rule is applied per t, checked against the library call at every ``--T-list`` entry). All
``--limit`` images are simulated for ``--full-T`` steps, an evenly spaced ``--long-limit`` subset of them up to
``max(--T-list)``; accuracies past ``--full-T`` are on that subset, and so is the spikegcn row they are compared with.

The model's option-A shortcut (strided slice + ``F.pad``) traces under SpikingJelly's fx tracer, but its step-mode
adapter rejects the ``F.pad`` node ("does not support function node pad"), so for SpikingJelly each
``OptionAShortcut`` is replaced by the equivalent frozen 1x1 stride-s convolution with 0/1 weights (output channel
``pad_front + c`` = input channel ``c``); the script checks that the adapted ANN gives bit-identical logits.

Setup (a separate benchmark environment; spikingjelly is never a project dependency), from the repository root::

    python -m venv .venv-sj
    .venv-sj/bin/pip install torch==2.13.0
    .venv-sj/bin/pip install --no-deps spikingjelly==2.0.0
    .venv-sj/bin/pip install numpy tqdm loguru requests   # what `import spikingjelly.activation_based.ann2snn` needs
    .venv-sj/bin/pip install torch-geometric              # what `import spikegcn` needs (torch-scatter is optional)
    .venv-sj/bin/pip install --no-deps -e .

Run::

    export OMP_WAIT_POLICY=PASSIVE SPIKEGCN_DATA=/work/shared/datasets SPIKEGCN_WEIGHTS=/work/shared/weights
    .venv-sj/bin/python benchmarks/spikingjelly_compare.py [--limit 1000] [--calib 2000] \
        [--T-list 8 16 32 64 128 256] [--modes max 99.9% 99.99% 0.5 robust ltb] [--out results/spikingjelly_compare]

Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import date, datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterable

os.environ.setdefault("TQDM_DISABLE", "1")  # SpikingJelly's calibration loops use tqdm

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from spikegcn import PhaseCode, convert, latency  # noqa: E402
from spikegcn.experiments.cnn_train import default_checkpoint_path, load_checkpoint  # noqa: E402
from spikegcn.fileio import write_json, write_text  # noqa: E402
from spikegcn.vision import CIFAR_MEAN, CIFAR_STD, load_cifar10_jpg, load_pretrained, normalize  # noqa: E402
from spikegcn.vision.models import OptionAShortcut  # noqa: E402

try:
    import spikingjelly.activation_based.ann2snn as ann2snn
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based.ann2snn import delay as sj_delay
    from spikingjelly.activation_based.neuron import BaseNode
    from spikingjelly.logger import logger as sj_logger
except ImportError as exc:  # pragma: no cover - benchmark environment only
    sys.exit(f"spikingjelly is not importable ({exc}); set up .venv-sj as the docstring of {__file__} says")

sj_logger.disable("spikingjelly")  # one info line per conversion / delay estimate


# ------------------------------------------------------------------------------------------------ data and model
def _subset(n_total: int, limit: int) -> Tensor:
    """Evenly spaced indices (as ``benchmarks/cnn_tables.py``)."""
    if limit <= 0 or limit >= n_total:
        return torch.arange(n_total)
    return torch.linspace(0, n_total - 1, limit).round().long()


def _calib(x: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` random images (as ``benchmarks/cnn_tables.py``)."""
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


def _file_info(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": st.st_size,
            "mtime": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")}


def load_resnet20(which: str) -> tuple[nn.Module, str]:
    ck = default_checkpoint_path("resnet20")
    if which == "finetuned" or (which == "auto" and ck.is_file()):
        return load_checkpoint(ck, "resnet20").eval(), f"fine-tuned on CIFAR-10 JPEG ({ck})"
    return load_pretrained("resnet20").eval(), ("published akamaster checkpoint, trained on lossless CIFAR-10, NOT "
                                                "fine-tuned on the JPEG images")


def sj_compatible(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each :class:`OptionAShortcut` replaced by the equal 1x1 strided 0/1 convolution."""
    m = copy.deepcopy(model).eval()
    for name, mod in list(m.named_modules()):
        if isinstance(mod, OptionAShortcut):
            conv = nn.Conv2d(mod.in_channels, mod.out_channels, 1, stride=mod.stride, bias=False)
            with torch.no_grad():
                conv.weight.zero_()
                for c in range(mod.in_channels):
                    conv.weight[mod.pad_front + c, c, 0, 0] = 1.0
            conv.weight.requires_grad_(False)
            parent, _, leaf = name.rpartition(".")
            setattr(m.get_submodule(parent) if parent else m, leaf, conv)
    return m


def _batched(x: Tensor, size: int) -> list[Tensor]:
    return [x[i:i + size] for i in range(0, len(x), size)]


def _acc(logits: Tensor, y: Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == y).double().mean())


# ------------------------------------------------------------------------------------------------ spikegcn
def run_spikegcn(model: nn.Module, calib: Tensor, x: Tensor, y: Tensor, long_idx: Tensor, T: int, Q: float,
                 batch: int) -> dict:
    t0 = time.perf_counter()
    snn = convert(model, calib, PhaseCode(T, Q), mode="functional")
    t_conv = time.perf_counter() - t0

    def measure(xs: Tensor, ys: Tensor) -> dict:
        t1 = time.perf_counter()
        out = snn.run(xs, batch)
        secs = time.perf_counter() - t1
        st = snn.layer_stats()
        n = len(ys)
        hidden = sum(s.out_spikes for s in st)
        avgpool = sum(s.out_spikes for s in st if s.kind == "avgpool")
        return {"images": n, "accuracy": _acc(out, ys), "input_spikes_per_image": st[0].in_spikes / n,
                "hidden_spikes_per_image": hidden / n, "hidden_neurons_per_image": sum(s.out_neurons for s in st) / n,
                "avgpool_spikes_per_image": avgpool / n, "seconds": secs,
                "layers": [{"name": s.name, "kind": s.kind, "out_neurons_per_image": s.out_neurons / n,
                            "out_spikes_per_image": s.out_spikes / n} for s in st if s.out_neurons]}

    full = measure(x, y)
    sub = measure(x[long_idx], y[long_idx])
    sub.pop("layers")
    n_layers = len(snn.spiking_layers())  # neuron layers, the output layer included
    return {"method": "spikegcn", "T": T, "Q": Q, "mode": "functional (= exact at Tw = T)", "Tw": T,
            "layers": n_layers, "latency_phases_one_image": latency(T, T, n_layers),
            "convert_seconds": t_conv, "all": full, "long_subset": sub}


# ------------------------------------------------------------------------------------------------ SpikingJelly
@dataclass
class SJConfig:
    name: str
    recipe: str
    settings: dict


def sj_config(mode: str) -> SJConfig:
    if mode == "ltb":
        return SJConfig("ltb", "LocalThresholdBalancingRecipe", {"fuse_flag": True})
    if mode == "robust":
        return SJConfig("robust", "RateCodingRecipe", {"mode": "99.9%", "channel_wise": True, "half_threshold": True,
                                                       "fuse_flag": True})
    if mode.endswith("%") or mode.lower() == "max":
        return SJConfig(mode, "RateCodingRecipe", {"mode": mode, "fuse_flag": True})
    return SJConfig(mode, "RateCodingRecipe", {"mode": float(mode), "fuse_flag": True})


def sj_convert(cfg: SJConfig, model: nn.Module, calib: Tensor, args) -> nn.Module:
    if cfg.recipe == "LocalThresholdBalancingRecipe":
        loader = _batched(calib, args.ltb_calib_batch) * args.ltb_passes
        recipe = ann2snn.LocalThresholdBalancingRecipe(dataloader=loader, **cfg.settings)
    else:
        recipe = ann2snn.RateCodingRecipe(dataloader=_batched(calib, args.calib_batch), **cfg.settings)
    return ann2snn.Converter(recipe=recipe, device="cpu").convert(sj_compatible(model))


def sj_delay_for(raw: int, t: int) -> int:
    """``ann2snn.estimate_delay_start``'s clamping of a raw delay for ``time_steps = t`` (its own rule)."""
    if t < raw + sj_delay._MIN_READOUT_STEPS:
        return max(t - sj_delay._MIN_READOUT_STEPS - 1, 0)
    return min(raw, t - 1)


@torch.no_grad()
def sj_simulate(snn: nn.Module, x: Tensor, steps: Tensor, batch: int) -> tuple[Tensor, Tensor, int]:
    """Per-step outputs ``[Tmax, N, C]`` (NaN past an image's steps), per-step hidden spikes ``[Tmax, N]`` and the
    IF neurons per image."""
    nodes = [m for m in snn.modules() if isinstance(m, BaseNode)]
    t_max, n = int(steps.max()), len(x)
    outs = torch.full((t_max, n, 10), float("nan"))
    spikes = torch.zeros(t_max, n, dtype=torch.float64)
    counter: dict[str, Tensor | int] = {"spk": torch.zeros(0), "neurons": 0}

    def hook(_m, _inp, out: Tensor) -> None:
        counter["spk"] = counter["spk"] + out.detach().flatten(1).sum(1).double()
        counter["neurons"] = counter["neurons"] + out[0].numel()

    handles = [m.register_forward_hook(hook) for m in nodes]
    neurons = 0
    try:
        # group images by their step count so that every batch runs one length
        for s in steps.unique().tolist():
            idx = (steps == s).nonzero().flatten()
            for bi in _batched(idx, batch):
                xb = x[bi]
                sj_functional.reset_net(snn)
                for t in range(s):
                    counter["spk"], counter["neurons"] = torch.zeros(len(bi), dtype=torch.float64), 0
                    outs[t, bi] = snn(xb).float()
                    spikes[t, bi] = counter["spk"]
                    neurons = int(counter["neurons"])
    finally:
        for h in handles:
            h.remove()
    sj_functional.reset_net(snn)
    return outs, spikes, neurons


def sj_curves(outs: Tensor, spikes: Tensor, y: Tensor, steps: Tensor, raw_delay: int) -> list[dict]:
    """Accuracy (all-step and delayed readout) and mean hidden spikes per image after every step t."""
    cum = outs.double().cumsum(0)
    cum_spk = spikes.cumsum(0)
    res = []
    for t in range(1, outs.shape[0] + 1):
        valid = steps >= t
        yy = y[valid]
        full = cum[t - 1][valid]
        d = sj_delay_for(raw_delay, t)
        delayed = full - cum[d - 1][valid] if d > 0 else full
        res.append({"t": t, "images": int(valid.sum()), "acc_all_steps": _acc(full, yy),
                    "acc_delayed": _acc(delayed, yy), "delay_start": d,
                    "hidden_spikes_per_image": float(cum_spk[t - 1][valid].mean())})
    return res


def run_sj(cfg: SJConfig, model: nn.Module, calib: Tensor, x: Tensor, y: Tensor, steps: Tensor, args) -> dict:
    t0 = time.perf_counter()
    snn = sj_convert(cfg, model, calib, args)
    t_conv = time.perf_counter() - t0
    probe = _batched(calib, args.calib_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        raw_delay = ann2snn.estimate_delay_start(snn, probe, "cpu", time_steps=1 << 30)
        for t in args.T_list:  # our per-t rule must equal the library call
            lib = ann2snn.estimate_delay_start(snn, probe, "cpu", time_steps=t)
            if lib != sj_delay_for(raw_delay, t):
                raise RuntimeError(f"delay rule mismatch at T={t}: library {lib}, ours {sj_delay_for(raw_delay, t)}")
    t1 = time.perf_counter()
    outs, spikes, neurons = sj_simulate(snn, x, steps, args.batch)
    t_sim = time.perf_counter() - t1
    curve = sj_curves(outs, spikes, y, steps, raw_delay)
    thresholds = [float(m.scale.mean()) for n, m in snn.named_modules() if n.endswith("scaler1")]
    return {"method": "spikingjelly", "config": cfg.name, "recipe": cfg.recipe,
            "settings": {k: v for k, v in cfg.settings.items()}, "if_layers": len(thresholds),
            "if_neurons_per_image": neurons, "raw_delay_start": raw_delay,
            "mean_threshold_per_layer": thresholds, "convert_seconds": t_conv, "simulate_seconds": t_sim,
            "image_steps": int(steps.sum()), "curve": curve,
            "at_T": {c["t"]: c for c in curve if c["t"] in args.T_list}}


# ------------------------------------------------------------------------------------------------ comparison
def _sj_points(sj_runs: list[dict], full_T: int, long: bool) -> Iterable[dict]:
    for r in sj_runs:
        for c in r["curve"]:
            if (c["t"] > full_T) != long:
                continue
            for readout in ("all_steps", "delayed"):
                yield {"config": r["config"], "readout": readout, "t": c["t"], "images": c["images"],
                       "accuracy": c[f"acc_{readout}"], "hidden_spikes_per_image": c["hidden_spikes_per_image"]}


def compare(sg: dict, sj_runs: list[dict], full_T: int) -> dict:
    """For one spikegcn point: SpikingJelly's best accuracy at no more hidden spikes per image, and the fewest hidden
    spikes per image at which it reaches at least the same accuracy (over every configuration, readout and step)."""
    out = {}
    for key, long in (("all", False), ("long_subset", True)):
        ref = sg[key]
        pts = list(_sj_points(sj_runs, full_T, long))
        cheaper = [p for p in pts if p["hidden_spikes_per_image"] <= ref["hidden_spikes_per_image"]]
        better = [p for p in pts if p["accuracy"] >= ref["accuracy"]]
        total = ref["hidden_spikes_per_image"] + ref["input_spikes_per_image"]
        cheaper_total = [p for p in pts if p["hidden_spikes_per_image"] <= total]
        best = max(cheaper, key=lambda p: (p["accuracy"], -p["hidden_spikes_per_image"])) if cheaper else None
        best_total = (max(cheaper_total, key=lambda p: (p["accuracy"], -p["hidden_spikes_per_image"]))
                      if cheaper_total else None)
        fewest = min(better, key=lambda p: (p["hidden_spikes_per_image"], -p["accuracy"])) if better else None
        peak = max(pts, key=lambda p: (p["accuracy"], -p["hidden_spikes_per_image"])) if pts else None
        out[key] = {"spikegcn_accuracy": ref["accuracy"], "spikegcn_hidden_spikes_per_image":
                    ref["hidden_spikes_per_image"], "spikegcn_hidden_plus_input_spikes_per_image": total,
                    "steps": f"t <= {full_T}" if not long else f"t > {full_T}",
                    "sj_best_at_no_more_spikes": best, "sj_best_at_no_more_than_hidden_plus_input": best_total,
                    "sj_fewest_spikes_for_same_accuracy": fewest, "sj_peak": peak,
                    "target_holds": best is None or best["accuracy"] < ref["accuracy"]}
    return out


# ------------------------------------------------------------------------------------------------ report
def _sj_label(r: dict) -> str:
    return f"{r['recipe']}({', '.join(f'{k}={v!r}' for k, v in r['settings'].items() if k != 'fuse_flag')})"


def write_md(res: dict, path: Path) -> None:
    sg_runs, sj_runs, full_T = res["spikegcn"], res["spikingjelly"], res["full_T"]
    n_long = res["long_images"]
    L = ["# SpikingJelly 2.0 ann2snn vs spikegcn one-spike conversion (CIFAR-10 ResNet-20)", "",
         f"{res['machine']}, {res['date']}, torch {res['versions']['torch']}, spikingjelly "
         f"{res['versions']['spikingjelly']}, spikegcn {res['versions']['spikegcn']}. Command: `{res['command']}` "
         f"({res['seconds']['total']:.0f} s; load average {res['load_average_start']} at the start, "
         f"{res['load_average_end']} at the end).", "",
         f"Weights: {res['weights']}. Test images: {res['test_images']} evenly spaced CIFAR-10 JPEG test images "
         f"(SpikingJelly past t = {full_T}: an evenly spaced {n_long}-image subset of them); calibration: "
         f"{res['calib_images']} random training images (seed 0); both the same for both converters.", "",
         "Spikes are per image, averaged over the test images. SpikingJelly feeds the analog image into conv1 at "
         "every step, so its only spikes are its hidden IF-neuron spikes (19 IF layers, "
         f"{sj_runs[0]['if_neurons_per_image'] if sj_runs else 0:,} neurons per image, spikes summed over all steps "
         "simulated); the comparable spikegcn count is its hidden spikes (its 19 ReLU layers plus the 64 average-pool "
         "re-encoding neurons). spikegcn also encodes the image into binary input spikes, listed separately. Time "
         "steps: SpikingJelly's rate-coding steps (every layer updates at every step, so t steps is also its "
         "latency); spikegcn's T phases per layer, at most one spike per neuron, layer after layer: one image takes "
         f"(L - 1) T + T phases end to end (L = {sg_runs[0]['layers'] if sg_runs else 0} neuron layers), and a new "
         "image can enter every T phases.", ""]
    if res.get("checkpoint"):
        ck = res["checkpoint"]
        L += [f"Checkpoint sha256 {ck['sha256'][:16]}…, written {ck['mtime']}"
              + (f" ({ck['note']})" if ck.get("note") else "") + ".", ""]
    if res.get("report_rebuilt"):
        L += [f"Report: {res['report_rebuilt']}; the measurements are those of the run above.", ""]
    L += ["| method | settings | accuracy % | ANN % | hidden spikes / image | input spikes / image | "
          "time steps / phases |", "|---|---|---:|---:|---:|---:|---|"]
    for r in sg_runs:
        a = r["all"]
        L.append(f"| spikegcn | one-spike phase code, Q = {r['Q']:g}, Tw = T (functional) | {a['accuracy']:.2f} | "
                 f"{res['ann_accuracy']:.2f} | {a['hidden_spikes_per_image']:,.0f} | "
                 f"{a['input_spikes_per_image']:,.0f} | T = {r['T']} per layer ({r['latency_phases_one_image']} "
                 "end to end) |")
    for r in sg_runs:
        b = r["compare"]["all"]["sj_best_at_no_more_spikes"]
        if b:
            L.append(f"| SpikingJelly, best at ≤ spikegcn T = {r['T']} spikes | {b['config']}, {b['readout']} "
                     f"readout | {b['accuracy']:.2f} | {res['ann_accuracy']:.2f} | "
                     f"{b['hidden_spikes_per_image']:,.0f} | — (analog) | t = {b['t']} |")
    for t in res["args"]["T_list"]:
        pts = [(c[f"acc_{ro}"], r, c, ro) for r in sj_runs for ro in ("all_steps", "delayed")
               for c in [r["at_T"][t]]]
        acc, r, c, ro = max(pts, key=lambda p: (p[0], -p[2]["hidden_spikes_per_image"]))
        ann = res["ann_accuracy"] if t <= full_T else res["ann_long_accuracy"]
        sub = "" if t <= full_T else f" ({c['images']} images)"
        L.append(f"| SpikingJelly, best at T = {t} | {r['config']}, {ro} readout | {acc:.2f}{sub} | {ann:.2f}{sub} | "
                 f"{c['hidden_spikes_per_image']:,.0f} | — (analog) | t = {t} |")
    L += ["", res["verdict"], "",
          "\"Best\" SpikingJelly rows take the maximum over every configuration and both readouts (and, for the spike "
          "budget rows, every step t), picked on the test images themselves: a selection in SpikingJelly's favour.", ""]

    L += ["## Every SpikingJelly configuration", "",
          "Accuracy % with the all-step readout / the delayed readout (outputs summed from step d = "
          "`ann2snn.estimate_delay_start(snn, calib, T)`), and hidden spikes per image (thousands). Columns past "
          f"t = {full_T}: the {n_long}-image subset (ANN {res['ann_long_accuracy']:.2f} % there).", "",
          "| config | recipe | " + " | ".join(f"T = {t}" for t in res["args"]["T_list"]) + " |",
          "|---|---|" + "---|" * len(res["args"]["T_list"])]
    for r in sj_runs:
        cells = [f"{c['acc_all_steps']:.1f} / {c['acc_delayed']:.1f} (d={c['delay_start']}), "
                 f"{c['hidden_spikes_per_image'] / 1e3:,.0f}k" for c in (r["at_T"][t] for t in res["args"]["T_list"])]
        L.append(f"| {r['config']} | {_sj_label(r)} | " + " | ".join(cells) + " |")
    L += ["", f"LTB calibration: batches of {res['args']['ltb_calib_batch']} images, {res['args']['ltb_passes']} "
          f"passes over the calibration images; rate coding: batches of {res['args']['calib_batch']} (SpikingJelly's "
          "EMA of per-batch statistics). Conv-BN fused (SpikingJelly's default) in all.", ""]

    L += ["## Same spike budget", "",
          "Best SpikingJelly accuracy over every configuration, both readouts and every step t at no more hidden "
          "spikes per image than spikegcn, and the fewest hidden spikes at which it matches spikegcn's accuracy "
          f"(rows \"subset\": spikegcn on the {n_long}-image subset against SpikingJelly's steps t > {full_T}):", "",
          "| spikegcn | accuracy % | hidden spikes | SJ best at ≤ spikes | SJ fewest spikes for ≥ accuracy | "
          "target |", "|---|---:|---:|---|---|---|"]
    for r in sg_runs:
        for key in ("all", "long_subset"):
            c = r["compare"][key]
            b, f = c["sj_best_at_no_more_spikes"], c["sj_fewest_spikes_for_same_accuracy"]
            fb = (f"{b['accuracy']:.2f} % at {b['hidden_spikes_per_image']:,.0f} ({b['config']}, {b['readout']}, "
                  f"t = {b['t']})") if b else f"no point ({c['steps']})"
            ff = (f"{f['hidden_spikes_per_image']:,.0f} ({f['accuracy']:.2f} %, {f['config']}, {f['readout']}, "
                  f"t = {f['t']})") if f else f"not reached ({c['steps']})"
            label = f"T = {r['T']}" + ("" if key == "all" else f", subset ({r['long_subset']['images']} images)")
            L.append(f"| {label} | {c['spikegcn_accuracy']:.2f} | {c['spikegcn_hidden_spikes_per_image']:,.0f} | "
                     f"{fb} | {ff} | {'holds' if c['target_holds'] else 'does not hold'} |")
    L += ["", "## Setup", "", "Separate benchmark environment (spikingjelly is not a project dependency), from the "
          "repository root:", "", "```", *res["setup"], res["command"], "```", "",
          "SpikingJelly's step-mode adapter rejects the option-A shortcut's `F.pad` (\"does not support function node "
          "pad\"), so its copy of the model has each `OptionAShortcut` replaced by the equal frozen 1x1 strided 0/1 "
          f"convolution (max |logit difference| against the original: {res['adapted_max_abs_diff']:g}). spikegcn "
          "converts the original model.", ""]
    write_text(path, "\n".join(L))


def verdict(res: dict) -> str:
    parts = []
    for r in res["spikegcn"]:
        c = r["compare"]["all"]
        b = c["sj_best_at_no_more_spikes"]
        sj = (f"SpikingJelly's best at no more spikes is {b['accuracy']:.2f} % ({b['config']}, {b['readout']} readout, "
              f"t = {b['t']}, {b['hidden_spikes_per_image']:,.0f} spikes)") if b else \
            "SpikingJelly has no point with that few spikes"
        f = c["sj_fewest_spikes_for_same_accuracy"]
        fs = (f"; SpikingJelly needs {f['hidden_spikes_per_image']:,.0f} hidden spikes per image to reach "
              f"{f['accuracy']:.2f} % ({f['config']}, {f['readout']} readout, t = {f['t']})") if f else \
            f"; SpikingJelly does not reach that accuracy within t <= {res['full_T']}"
        if not f:
            cs = r["compare"]["long_subset"]
            g = cs["sj_fewest_spikes_for_same_accuracy"]
            fs += (f" (on the {r['long_subset']['images']}-image subset, where spikegcn has "
                   f"{cs['spikegcn_accuracy']:.2f} % at {cs['spikegcn_hidden_spikes_per_image']:,.0f} spikes, "
                   f"SpikingJelly first matches it with "
                   f"{g['hidden_spikes_per_image']:,.0f} spikes: {g['accuracy']:.2f} %, {g['config']}, {g['readout']} "
                   f"readout, t = {g['t']})") if g else \
                f" (nor within t <= {max(res['args']['T_list'])} on the {r['long_subset']['images']}-image subset)"
        parts.append(f"spikegcn T = {r['T']}: {c['spikegcn_accuracy']:.2f} % at "
                     f"{c['spikegcn_hidden_spikes_per_image']:,.0f} hidden spikes per image; {sj}{fs}")
    holds = all(r["compare"]["all"]["target_holds"] for r in res["spikegcn"])
    text = (f"**Target (higher accuracy at fewer spikes per image) {'holds' if holds else 'does NOT hold'}** on the "
            f"{res['test_images']} test images: " + ". ".join(parts) + ".")
    if res["spikegcn"]:
        c0 = res["spikegcn"][0]["compare"]["all"]
        bt = c0["sj_best_at_no_more_than_hidden_plus_input"]
        if bt:
            text += (f" Counting spikegcn's input spikes too ({c0['spikegcn_hidden_plus_input_spikes_per_image']:,.0f} "
                     f"per image at T = {res['spikegcn'][0]['T']}), SpikingJelly's best within that many is "
                     f"{bt['accuracy']:.2f} % ({bt['config']}, {bt['readout']} readout, t = {bt['t']}).")
        pk = c0["sj_peak"]
        if pk:
            gaps = ", ".join(f"{pk['accuracy'] - r['compare']['all']['spikegcn_accuracy']:+.2f} points against T = "
                             f"{r['T']}" for r in res["spikegcn"])
            ratio = pk["hidden_spikes_per_image"] / c0["spikegcn_hidden_spikes_per_image"]
            text += (f" Unconstrained, SpikingJelly's highest accuracy on these images is {pk['accuracy']:.2f} % "
                     f"({pk['config']}, {pk['readout']} readout, t = {pk['t']}, "
                     f"{pk['hidden_spikes_per_image']:,.0f} hidden spikes per image, {ratio:.0f}x spikegcn's at T = "
                     f"{res['spikegcn'][0]['T']}): {gaps}.")
    return text


# ------------------------------------------------------------------------------------------------ main
SETUP = ["python -m venv .venv-sj",
         ".venv-sj/bin/pip install torch==2.13.0",
         ".venv-sj/bin/pip install --no-deps spikingjelly==2.0.0",
         ".venv-sj/bin/pip install numpy tqdm loguru requests",
         ".venv-sj/bin/pip install torch-geometric",
         ".venv-sj/bin/pip install --no-deps -e .",
         "export OMP_WAIT_POLICY=PASSIVE SPIKEGCN_DATA=/work/shared/datasets SPIKEGCN_WEIGHTS=/work/shared/weights"]


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def rebuild(src: Path, out: Path) -> dict:
    """Recompute the comparison and verdict of a saved run and rewrite its JSON and markdown."""
    res = json.loads(src.read_text())
    res["report_rebuilt"] = f"comparison and report rebuilt on {date.today()} from {src.name} (--from-json)"
    if "checkpoint" not in res and res["weights"].startswith("fine-tuned"):
        res["checkpoint"] = dict(_file_info(default_checkpoint_path("resnet20")), note="recorded at the rebuild")
    for r in res["spikingjelly"]:
        r["at_T"] = {int(t): c for t, c in r["at_T"].items()}
    for r in res["spikegcn"]:
        r["compare"] = compare(r, res["spikingjelly"], res["full_T"])
    res["verdict"] = verdict(res)
    write_json(out.with_suffix(".json"), res, indent=1)
    write_md(res, out.with_suffix(".md"))
    print(res["verdict"])
    return res


def _command(argv: list[str] | None) -> str:
    exe = Path(sys.executable)
    if exe.is_relative_to(Path.cwd()):
        exe = exe.relative_to(Path.cwd())
    return " ".join([str(exe), *(sys.argv if argv is None else [sys.argv[0], *argv])])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=1000, help="evenly spaced test images (0: all 10000)")
    p.add_argument("--calib", type=int, default=2000, help="random training images for calibration")
    p.add_argument("--T-list", dest="T_list", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256],
                   help="SpikingJelly time steps to tabulate (every step up to the largest is evaluated)")
    p.add_argument("--full-T", dest="full_T", type=int, default=64,
                   help="steps simulated for all test images; only --long-limit of them go on to max(--T-list)")
    p.add_argument("--long-limit", type=int, default=150,
                   help="evenly spaced subset of the test images simulated past --full-T (0: all)")
    p.add_argument("--modes", nargs="+", default=["max", "99.9%", "99.99%", "0.5", "robust", "ltb"],
                   help="SpikingJelly configurations: max, P%%, a float in (0, 1], robust, ltb")
    p.add_argument("--codes", nargs="+", default=["16:1.3", "24:1.2"], help="spikegcn codes T:Q")
    p.add_argument("--calib-batch", type=int, default=100)
    p.add_argument("--ltb-calib-batch", type=int, default=5)
    p.add_argument("--ltb-passes", type=int, default=3)
    p.add_argument("--batch", type=int, default=100, help="simulation batch size")
    p.add_argument("--weights", choices=["auto", "finetuned", "published"], default="auto",
                   help="auto: the fine-tuned JPEG checkpoint when present, else the published one")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/spikingjelly_compare", help="output path without suffix")
    p.add_argument("--from-json", default=None,
                   help="rebuild the comparison, JSON and markdown from this saved JSON instead of simulating")
    args = p.parse_args(argv)
    if args.from_json:
        return rebuild(Path(args.from_json), Path(args.out))

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    model, weights = load_resnet20(args.weights)
    xtr, _ = load_cifar10_jpg("train")
    xte, yte = load_cifar10_jpg("test")
    idx = _subset(len(yte), args.limit)
    x, y = normalize(xte[idx], CIFAR_MEAN, CIFAR_STD), yte[idx]
    calib = normalize(_calib(xtr, args.calib), CIFAR_MEAN, CIFAR_STD)
    long_idx = _subset(len(y), args.long_limit)
    t_max = max(args.T_list)
    full_T = min(args.full_T, t_max)
    steps = torch.full((len(y),), full_T, dtype=torch.long)
    steps[long_idx] = t_max

    with torch.no_grad():
        ann = torch.cat([model(b) for b in _batched(x, 250)])
        adapted = torch.cat([sj_compatible(model)(b) for b in _batched(x, 250)])
    diff = float((ann - adapted).abs().max())
    if diff != 0.0:
        raise RuntimeError(f"the SpikingJelly-compatible model differs from the original (max |diff| {diff})")
    res: dict = {
        "date": str(date.today()), "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} torch threads)", "platform": platform.platform(), "python": platform.python_version(),
        "command": _command(argv),
        "versions": {k: _version(k) for k in ("torch", "spikingjelly", "spikegcn", "numpy", "torch-geometric")},
        "setup": SETUP, "args": vars(args), "weights": weights, "model": "resnet20",
        "dataset": "CIFAR-10 JPEG", "test_images": len(y), "long_images": len(long_idx), "full_T": full_T,
        "checkpoint": _file_info(default_checkpoint_path("resnet20")) if weights.startswith("fine-tuned") else None,
        "calib_images": len(calib), "load_average_start": load_start, "adapted_max_abs_diff": diff,
        "ann_accuracy": _acc(ann, y), "ann_long_accuracy": _acc(ann[long_idx], y[long_idx]), "seconds": {},
    }
    print(f"weights: {weights}\nANN {res['ann_accuracy']:.2f} % on {len(y)} images", flush=True)

    res["spikegcn"] = []
    for code in args.codes:
        T, Q = code.split(":")
        r = run_spikegcn(model, calib, x, y, long_idx, int(T), float(Q), args.batch)
        res["spikegcn"].append(r)
        print(f"spikegcn T={T} Q={Q}: {r['all']['accuracy']:.2f} %, hidden {r['all']['hidden_spikes_per_image']:,.0f}"
              f" / input {r['all']['input_spikes_per_image']:,.0f} spikes per image "
              f"({r['convert_seconds'] + r['all']['seconds']:.0f} s)", flush=True)

    res["spikingjelly"] = []
    for mode in args.modes:
        r = run_sj(sj_config(mode), model, calib, x, y, steps, args)
        res["spikingjelly"].append(r)
        print(f"SJ {mode}: " + ", ".join(f"T={t} {c['acc_all_steps']:.1f}/{c['acc_delayed']:.1f}% "
                                         f"{c['hidden_spikes_per_image']:,.0f}sp" for t, c in r["at_T"].items())
              + f" ({r['convert_seconds'] + r['simulate_seconds']:.0f} s)", flush=True)

    for r in res["spikegcn"]:
        r["compare"] = compare(r, res["spikingjelly"], full_T)
    res["verdict"] = verdict(res)
    res["seconds"]["total"] = time.perf_counter() - t_start
    res["load_average_end"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), res, indent=1)
    write_md(res, out.with_suffix(".md"))
    print(res["verdict"], flush=True)
    return res


if __name__ == "__main__":
    main()
