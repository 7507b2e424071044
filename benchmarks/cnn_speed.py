"""CNN simulation speed: the one-spike SNN against the ANN forward, on one batch of CIFAR-10 JPEG test images.

For each model (ResNet-20 and the VGG-style net of ``benchmarks/cnn_tables.py``) the ANN is converted at
T = 16, Q = 1.3 (lambda = max over ``--calib`` training images) and timed in one process, every configuration
warmed up first (no timing includes a kernel load or a first-call allocation) and the configurations interleaved
(best of ``--repeat``), so that all see the same machine load:

* ``ann``: the PyTorch model's forward;
* ``functional``: the quantised ANN on decoded values (one convolution per layer, compiled encoder/decoder);
* ``exact Tw = T``: phase-exact timing with the full wait (every input has arrived: the functional pass);
* ``exact Tw = 8`` / ``Tw = 4``: one convolution of the spikes that arrived before the first output phase plus
  the late spikes x fan-out (the compiled ``conv_exact`` kernel);
* ``exact Tw = 8, per phase``: the same layers stepped phase by phase (one convolution per late phase, the
  path used where the compiled kernels are not built), for the speed-up of the kernel (``--no-stepped`` skips).

Two ratios per configuration: best SNN time over best ANN time, and the median over the rounds of the SNN's time
over the ANN's in the same round (on a shared machine whose speed drifts, the best-of ratio may pair a quiet moment
of one with a busy moment of the other).

The record also has the late-spike fraction of every layer input at each wait (late: fired after the layer's
first output phase could see it, i.e. virtual phase > Tw + 1; fraction of that input's spikes) and checks that
exact Tw = T equals functional bit for bit and that the kernel agrees with the per-phase path.

Weights: ResNet-20 as ``cnn_tables.py`` picks it (the fine-tuned JPEG checkpoint when present, else the published
one); VGG: ``cnn_tables.py``'s cached checkpoint when present, else a seeded untrained net (timing only; the
record says which).

    python benchmarks/cnn_speed.py [--models resnet20 vgg] [--batch 256] [--repeat 3] [--threads 2]

Writes results/cnn_speed.json and results/cnn_speed.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from spikegcn import PhaseCode, convert
from spikegcn.experiments.cnn_train import default_checkpoint_path, load_checkpoint
from spikegcn.fileio import write_json, write_text
from spikegcn.kernels import conv_cpu, fused_cpu
from spikegcn.vision import CIFAR_MEAN, CIFAR_STD, get_model, load_cifar10_jpg, load_pretrained, normalize

ROOT = Path(__file__).resolve().parents[1]


def load_model(name: str) -> tuple[torch.nn.Module, str]:
    if name == "resnet20":
        ck = default_checkpoint_path("resnet20")
        if ck.is_file():
            return load_checkpoint(ck, "resnet20"), f"fine-tuned on CIFAR-10 JPEG ({ck.name})"
        return load_pretrained("resnet20"), "published akamaster checkpoint"
    ck = default_checkpoint_path("vgg_cifar", "small-jpg")
    if ck.is_file():
        return load_checkpoint(ck), f"cnn_tables checkpoint ({ck.name})"
    torch.manual_seed(0)
    return get_model("vgg_cifar", cfg="small").eval(), "UNTRAINED (seeded init, timing only: no checkpoint cached)"


def late_fractions(snn, x: torch.Tensor, code: PhaseCode) -> list[dict]:
    """Per neuron layer input: the fraction of its spikes that arrive after the layer's first output phase."""
    rows: list[dict] = []

    def hook(layer, inputs, _out):
        if layer.output == "potential":  # the output layer integrates everything: no timing
            return
        out_start = max(s.start for s in inputs) + code.Tw
        for i, s in enumerate(inputs):  # input i is seen up to its phase t + d at output phase t
            late = conv_cpu.late_spikes(s, out_start - s.start + 1, 0, torch.float32)[3].numel()
            total = s.num_spikes()
            rows.append({"layer": names[layer] + (".shortcut" if i else ""), "spikes": total,
                         "late": late, "late_fraction": late / total if total else 0.0})

    names = {m: n for n, m in snn.spiking_layers()}
    handles = [m.register_forward_hook(hook) for m in names]
    snn.set_code(code).set_mode("exact")
    try:
        with torch.no_grad():
            snn(x)
    finally:
        for h in handles:
            h.remove()
    return rows


def sweep_speedup(snn, x: torch.Tensor, code: PhaseCode, tws: list[int], batch: int) -> dict:
    """Time of the exact-mode wait sweep of cnn_tables.py (Table VIII) on ``x`` in batches of ``batch`` images (it
    runs its sweep batch by batch too): every wait once with the compiled kernel and once stepped phase by phase
    (after a warm-up of each path)."""
    secs = {"kernel": 0.0, "per_phase": 0.0}
    load = fused_cpu.load
    with torch.no_grad():
        for tw in tws:
            snn.set_code(code.replace(Tw=tw)).set_mode("exact")
            for path in ("kernel", "per_phase"):
                if path == "per_phase":
                    fused_cpu.load = lambda: None
                try:
                    snn(x[:8])  # warm-up
                    t0 = time.perf_counter()
                    for i in range(0, len(x), batch):
                        snn(x[i:i + batch])
                    secs[path] += time.perf_counter() - t0
                finally:
                    fused_cpu.load = load
    return {"images": len(x), "batch": min(batch, len(x)), "waits": tws, "seconds": secs,
            "speedup": secs["per_phase"] / secs["kernel"]}


def time_configs(configs: dict, repeat: int) -> dict[str, list[float]]:
    """Wall times of each configuration, ``repeat`` rounds interleaved (every configuration once per round, the ANN
    first); every one is run once before (warm-up)."""
    times: dict[str, list[float]] = {k: [] for k in configs}
    for run in configs.values():
        run()
    for _ in range(repeat):
        for k, run in configs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    return times


def paired_median(times: dict[str, list[float]]) -> dict[str, float]:
    """Per configuration, the median over rounds of its time over the ANN's in the same round: a drift of the
    machine's speed between rounds cancels, where the best-of ratio pairs two different moments."""
    return {k: statistics.median(t / a for t, a in zip(ts, times["ann"])) for k, ts in times.items()}


def bench_model(name: str, args) -> dict:
    model, weights = load_model(name)
    xtr, _ = load_cifar10_jpg("train")
    xte, _ = load_cifar10_jpg("test")
    g = torch.Generator().manual_seed(args.seed)
    calib = normalize(xtr[torch.randperm(len(xtr), generator=g)[:args.calib]], CIFAR_MEAN, CIFAR_STD)
    x = normalize(xte[:args.batch], CIFAR_MEAN, CIFAR_STD)
    code = PhaseCode(args.T, args.Q)
    snn = convert(model, calib, code, mode="functional")

    def snn_run(mode: str, tw: int, stepped: bool = False):
        def run():
            snn.set_code(code.replace(Tw=tw)).set_mode(mode)
            if stepped:  # the per-phase path: the compiled kernel switched off for this call
                load = fused_cpu.load
                fused_cpu.load = lambda: None
                try:
                    return snn(x)
                finally:
                    fused_cpu.load = load
            return snn(x)
        return run

    with torch.no_grad():
        configs = {"ann": lambda: model(x), "functional": snn_run("functional", code.T),
                   f"exact Tw={code.T}": snn_run("exact", code.T)}
        for tw in args.tw:
            configs[f"exact Tw={tw}"] = snn_run("exact", tw)
        if not args.no_stepped:
            configs[f"exact Tw={args.tw[0]}, per phase"] = snn_run("exact", args.tw[0], stepped=True)
        load_before = os.getloadavg()
        times = time_configs(configs, args.repeat)
        secs = {k: min(ts) for k, ts in times.items()}
        load_after = os.getloadavg()
        outs = {k: run() for k, run in configs.items() if k != "ann"}
    checks = {"exact Tw=T equals functional": bool(torch.equal(outs["functional"], outs[f"exact Tw={code.T}"]))}
    if not args.no_stepped:
        a, b = outs[f"exact Tw={args.tw[0]}"], outs[f"exact Tw={args.tw[0]}, per phase"]
        checks["kernel vs per phase: max |logit diff|"] = float((a - b).abs().max())
        checks["kernel vs per phase: argmax agreement"] = float((a.argmax(1) == b.argmax(1)).double().mean())
    late = {tw: late_fractions(snn, x, code.replace(Tw=tw)) for tw in args.tw}
    sweep = None
    if args.sweep_images:  # the first test images, in batches of --batch
        xs = x if args.sweep_images <= len(x) else normalize(xte[:args.sweep_images], CIFAR_MEAN, CIFAR_STD)
        sweep = sweep_speedup(snn, xs[:args.sweep_images], code, args.sweep_tw, args.batch)
    rec = {"model": name, "weights": weights, "batch": len(x), "calib_images": len(calib), "T": code.T, "Q": code.Q,
           "seconds": secs, "ratio_to_ann": {k: v / secs["ann"] for k, v in secs.items()},
           "all_seconds": times, "paired_ratio_median": paired_median(times), "checks": checks,
           "late_spikes": {str(tw): rows for tw, rows in late.items()}, "tw_sweep": sweep,
           "load_average_before_after": [load_before[0], load_after[0]]}
    print(f"{name}: " + ", ".join(f"{k} {v:.3f} s ({rec['ratio_to_ann'][k]:.2f}x, paired median "
                                  f"{rec['paired_ratio_median'][k]:.2f}x)" for k, v in secs.items()), flush=True)
    return rec


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def write_md(res: dict, path: Path) -> None:
    lines = ["# CNN simulation speed", "",
             f"`python benchmarks/cnn_speed.py` on {res['machine']}, {res['threads']} threads, torch {res['torch']}, "
             f"compiled kernels: {res['compiled_kernels']}, {res['date']}. Batch of {res['batch']} CIFAR-10 JPEG test "
             f"images, T = {res['T']}, Q = {res['Q']}; best of {res['repeat']} interleaved runs after a warm-up. "
             "Ratio = SNN time / ANN forward time in the same run. The machine is shared: the 1-minute load average "
             "before/after the timings is given per model.", ""]
    keys = list(res["models"][0]["seconds"])
    lines += ["| model | " + " | ".join(keys) + " | load avg |", "|---" * (len(keys) + 2) + "|"]
    for m in res["models"]:
        cells = [f"{m['seconds']['ann']:.3f} s"] + [f"{m['ratio_to_ann'][k]:.2f}x ({m['seconds'][k]:.2f} s)"
                                                    for k in keys[1:]]
        la = m["load_average_before_after"]
        lines.append(f"| {m['model']} | " + " | ".join(cells) + f" | {la[0]:.1f} / {la[1]:.1f} |")
    lines += ["", "The same runs, each round's SNN time over the ANN's in that round, median over the rounds (a drift "
              "of the machine's speed between rounds cancels; the ANN's range over the rounds in its column):", "",
              "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for m in res["models"]:
        a = m["all_seconds"]["ann"]
        cells = [f"{min(a):.3f}-{max(a):.3f} s"] + [f"{m['paired_ratio_median'][k]:.2f}x" for k in keys[1:]]
        lines.append(f"| {m['model']} | " + " | ".join(cells) + " |")
    lines += [""]
    for m in res["models"]:
        lines += [f"**{m['model']}** ({m['weights']}); checks: "
                  + "; ".join(f"{k}: {v}" for k, v in m["checks"].items()), ""]
        if m["tw_sweep"]:
            s = m["tw_sweep"]
            est = ("" if s["images"] >= 2000 else " (an estimate for the 2,000-image sweep of cnn_tables.py, which "
                   "runs the same layers image batch by image batch; `--sweep-images 2000` measures it)")
            lines += [f"Table VIII wait sweep (exact mode, Tw = {', '.join(map(str, s['waits']))}) on {s['images']} "
                      f"images in batches of {s.get('batch', s['images'])}: {s['seconds']['kernel']:.2f} s with the "
                      f"kernel, {s['seconds']['per_phase']:.2f} s stepped phase by phase: **{s['speedup']:.1f}x** "
                      f"faster{est}.", ""]
        tws = list(m["late_spikes"])
        lines += ["| layer input | " + " | ".join(f"late at Tw = {tw}" for tw in tws) + " |",
                  "|---" * (len(tws) + 1) + "|"]
        for i, row in enumerate(m["late_spikes"][tws[0]]):
            lines.append(f"| {row['layer']} | " + " | ".join(
                f"{100 * m['late_spikes'][tw][i]['late_fraction']:.1f} %" for tw in tws) + " |")
        lines += [""]
    write_text(path, "\n".join(lines))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "vgg"], choices=["resnet20", "vgg"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--calib", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--Q", type=float, default=1.3)
    ap.add_argument("--tw", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep-images", type=int, default=64,
                    help="test images for the Table VIII sweep timing (kernel vs per phase, in batches of --batch); "
                         "0 skips it")
    ap.add_argument("--sweep-tw", type=int, nargs="+", default=[4, 6, 8, 10, 12, 14, 16])
    ap.add_argument("--no-stepped", action="store_true", help="skip the per-phase reference timing")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cnn_speed")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if fused_cpu.load() is None:
        print("the compiled CPU kernels are not built (run `spikegcn build-kernels`): timing the torch paths",
              file=sys.stderr)
    res = {"machine": f"{_cpu_model()}, {os.cpu_count()} cores", "threads": args.threads,
           "torch": torch.__version__, "compiled_kernels": fused_cpu.load() is not None, "date": str(date.today()),
           "batch": args.batch, "T": args.T, "Q": args.Q, "repeat": args.repeat,
           "models": [bench_model(m, args) for m in args.models]}
    write_json(args.out.with_suffix(".json"), res)
    write_md(res, args.out.with_suffix(".md"))
    print(f"wrote {args.out}.json and .md")


if __name__ == "__main__":
    main()
