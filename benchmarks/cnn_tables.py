"""CNN tables (I/IV, VI, VII, VIII): ResNet-20 and a VGG-style net on CIFAR-10 JPEG, LeNet-5 on MNIST.

For every model: ANN accuracy; one-spike SNN at T = 16, Q = 1.3, Tw = T (functional mode, which is exact at
Tw = T; the tests check exact == functional bit for bit there); a wait sweep Tw = 4..16 step 2 in exact mode
(Table VIII); the single-spike input ablation (Table VII); INT8 weights, per-output-channel symmetric (Table VI);
the floor encoding (no threshold shift, Fig. 7) and layer-wise normalisation ablations; spikes per neuron per
layer; energy ratios E_ANN/E_SNN for FP32 and INT8 (E_MAC = 0.23 pJ, and 0.2 pJ as four of the paper's Table VI
rows use), exact (spikes x fan-out) and with the paper's s x MAC approximation.

Weights:
* ResNet-20: the fine-tuned JPEG checkpoint ``cache_dir()/checkpoints/resnet20-jpg-ft.pt`` (made by
  ``spikegcn finetune resnet20``) when present, else the published checkpoint (trained on the lossless
  images; the report says which).
* ``resnet20-an``: ResNet-20 fine-tuned the same way but conversion-aware, every ReLU output multiplied by
  1 + U(-0.13, 0.13) during training (0.13 = (Q - 1) / (Q + 1), the code's largest round-off at Q = 1.3):
  ``spikegcn finetune resnet20 --activation-noise 0.13`` makes ``resnet20-jpg-ft-an0.13.pt``.
* ``resnet20-fq``: the fine-tuned ResNet-20 trained 2 more epochs through the code itself (every ReLU output
  quantised by the T = 16, Q = 1.3 phase code over its per-channel batch max, straight-through gradients):
  ``spikegcn finetune resnet20 --init <resnet20-jpg-ft.pt> --epochs 2 --lr 0.005 --fake-quant 16 1.3`` makes
  ``resnet20-jpg-ft-fq16-1.3.pt``.
* ``resnet20-fqw``: as ``resnet20-fq`` but 6 epochs, with the converter's view of the code during training: the
  scale is the maximum over the last 16 batches (about the calibration set), the average pool is quantised too
  and batch norm is frozen: ``... --epochs 6 --lr 0.005 --fake-quant 16 1.3 --fq-window 16 --freeze-bn`` makes
  ``resnet20-jpg-ft-fq16-1.3-w16-fbn.pt``; ``resnet20-fqw16`` trains that one 10 more epochs (lr 0.003),
  ``resnet20-fqw26`` 10 more again.
* VGG ("small" config) and LeNet-5: ``cache_dir()/checkpoints/vgg_cifar-small-jpg.pt`` and ``lenet5-mnist.pt``;
  trained here (seeded; ``--vgg-epochs``, ``--lenet-epochs``) and cached when missing. ``--max-train-steps`` makes a
  quick smoke model that is *not* cached.

Calibration: lambda = max over ``--calib`` random training images (docs/method.md, A4). Test images: ``--limit``
evenly spaced (class-balanced) test images (all when 0); ``--sweep-limit`` for the Tw sweep, which costs T - Tw extra
convolutions per layer.

    python benchmarks/cnn_tables.py [--models resnet20 vgg lenet5] [--limit 0] [--calib 2000]

Writes results/cnn_tables.json and results/cnn_tables.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from spikegcn import PhaseCode, convert
from spikegcn.energy import FP32, INT8, INT8_MULT_ONLY
from spikegcn.experiments.cnn_train import TrainConfig, default_checkpoint_path, fit, load_checkpoint, save_checkpoint
from spikegcn.fileio import load_cached, load_torch, write_json, write_text
from spikegcn.vision import (
    CIFAR_MEAN,
    CIFAR_STD,
    cifar10_loader,
    get_model,
    load_cifar10_jpg,
    load_mnist,
    load_pretrained,
    mnist_loader,
    normalize,
)

# Paper numbers for CIFAR-10 (Tables I, IV, VI, VII, VIII): ANN, SNN, E FP32, INT8 SNN, E INT8, single-spike SNN,
# single-spike E, Tw sweep 4..16. The paper's VGG is VGG-16; ours is a small VGG-style net.
PAPER = {
    "resnet20": dict(ann=92.67, snn=92.61, e_fp32=13.72, int8_snn=92.55, e_int8=20.56, single_snn=56.57,
                     single_e=14.56, tw={4: 90.47, 6: 91.85, 8: 92.37, 10: 92.37, 12: 92.63, 14: 92.55, 16: 92.61}),
    "vgg": dict(ann=93.90, snn=93.76, e_fp32=14.13, int8_snn=93.55, e_int8=18.42, single_snn=76.97, single_e=14.45,
                tw={4: 84.15, 6: 91.47, 8: 93.56, 10: 93.68, 12: 93.75, 14: 93.83, 16: 93.76}),
}


# ------------------------------------------------------------------------------------------------ models and data
def _subset(n_total: int, limit: int) -> torch.Tensor:
    if limit <= 0 or limit >= n_total:
        return torch.arange(n_total)
    return torch.linspace(0, n_total - 1, limit).round().long()


# conversion-aware ResNet-20 variants: checkpoint tag, description, command that makes it
VARIANTS = {
    "resnet20-an": ("jpg-ft-an0.13", "fine-tuned on CIFAR-10 JPEG with activation noise U(-0.13, 0.13) on every ReLU",
                    "spikegcn finetune resnet20 --activation-noise 0.13"),
    "resnet20-fq": ("jpg-ft-fq16-1.3", "the fine-tuned checkpoint trained 2 more epochs with every ReLU output "
                    "quantised by the T = 16, Q = 1.3 code (straight-through gradients)",
                    "spikegcn finetune resnet20 --init ~/.cache/spikegcn/checkpoints/resnet20-jpg-ft.pt --epochs 2 "
                    "--lr 0.005 --fake-quant 16 1.3"),
    "resnet20-fqw": ("jpg-ft-fq16-1.3-w16-fbn", "the fine-tuned checkpoint trained 6 more epochs with every ReLU and "
                     "the average pool quantised by the T = 16, Q = 1.3 code over the maximum of the last 16 batches "
                     "(about the converter's calibration set), batch norm frozen (straight-through gradients)",
                     "spikegcn finetune resnet20 --init ~/.cache/spikegcn/checkpoints/resnet20-jpg-ft.pt --epochs 6 "
                     "--lr 0.005 --fake-quant 16 1.3 --fq-window 16 --freeze-bn"),
    "resnet20-fqw16": ("jpg-ft-fq16-1.3-w16-fbn-x10", "resnet20-fqw trained 10 more epochs the same way (lr 0.003, "
                       "cosine): 16 code-aware epochs in all",
                       "spikegcn finetune resnet20 --init "
                       "~/.cache/spikegcn/checkpoints/resnet20-jpg-ft-fq16-1.3-w16-fbn.pt "
                       "--epochs 10 --lr 0.003 --fake-quant 16 1.3 --fq-window 16 --freeze-bn "
                       "--out ~/.cache/spikegcn/checkpoints/resnet20-jpg-ft-fq16-1.3-w16-fbn-x10.pt"),
    "resnet20-fqw26": ("jpg-ft-fq16-1.3-w16-fbn-x20", "resnet20-fqw16 trained 10 more epochs the same way (lr 0.003, "
                       "cosine): 26 code-aware epochs in all",
                       "spikegcn finetune resnet20 --init "
                       "~/.cache/spikegcn/checkpoints/resnet20-jpg-ft-fq16-1.3-w16-fbn-x10.pt "
                       "--epochs 10 --lr 0.003 --fake-quant 16 1.3 --fq-window 16 --freeze-bn "
                       "--out ~/.cache/spikegcn/checkpoints/resnet20-jpg-ft-fq16-1.3-w16-fbn-x20.pt"),
}
MODELS = ("resnet20", *VARIANTS, "vgg", "lenet5")  # table order


def _calib(x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


def load_model(name: str, args) -> tuple[torch.nn.Module, str, dict]:
    """The trained model, a description of its weights, and its data (calib / test tensors)."""
    if name in ("resnet20", *VARIANTS, "vgg"):
        xtr, _ = load_cifar10_jpg("train")
        xte, yte = load_cifar10_jpg("test")
        idx = _subset(len(yte), args.limit)
        data = dict(calib=normalize(_calib(xtr, args.calib), CIFAR_MEAN, CIFAR_STD),
                    x=normalize(xte[idx], CIFAR_MEAN, CIFAR_STD), y=yte[idx], dataset="CIFAR-10 JPEG")
    else:
        xtr, _ = load_mnist("train")
        xte, yte = load_mnist("test")
        idx = _subset(len(yte), args.limit)
        data = dict(calib=_calib(xtr, args.calib), x=xte[idx], y=yte[idx], dataset="MNIST (raw [0, 1) pixels)")

    if name == "resnet20":
        ck = default_checkpoint_path("resnet20")
        if ck.is_file():
            return load_checkpoint(ck, "resnet20"), f"fine-tuned on CIFAR-10 JPEG ({ck})", data
        return load_pretrained("resnet20"), ("published akamaster checkpoint, trained on lossless CIFAR-10, NOT "
                                             "fine-tuned on the JPEG images"), data
    if name in VARIANTS:
        tag, how, make_it = VARIANTS[name]
        ck = default_checkpoint_path("resnet20", tag)
        if not ck.is_file():
            raise SystemExit(f"{ck} is missing: run `{make_it}` first")
        return load_checkpoint(ck, "resnet20"), f"{how} ({ck})", data
    if name == "vgg":
        ck = default_checkpoint_path("vgg_cifar", "small-jpg")
        make = lambda: get_model("vgg_cifar", cfg="small")  # noqa: E731
        loader = lambda: cifar10_loader("train", 128, seed=0, dataset="cifar10-jpg")  # noqa: E731
        cfg = TrainConfig(epochs=args.vgg_epochs, lr=0.05, weight_decay=5e-4, seed=0, max_steps=args.max_train_steps)
        kw = {"cfg": "small"}
    else:
        ck = default_checkpoint_path("lenet5", "mnist")
        make = lambda: get_model("lenet5")  # noqa: E731
        loader = lambda: mnist_loader("train", 128, seed=0)  # noqa: E731
        cfg = TrainConfig(epochs=args.lenet_epochs, lr=0.05, weight_decay=5e-4, seed=0, max_steps=args.max_train_steps)
        kw = {}
    cached = load_cached(ck, lambda p: (load_checkpoint(p), load_torch(p)), "cached checkpoint") \
        if args.max_train_steps is None else None
    if cached is not None:
        return cached[0], f"cached checkpoint {ck} ({cached[1].get('config', {}).get('epochs')} epochs)", data
    torch.manual_seed(0)
    model = make()
    t0 = time.perf_counter()
    fit(model, loader(), cfg, progress=False)
    secs = time.perf_counter() - t0
    if args.max_train_steps is None:
        save_checkpoint(ck, model, arch="vgg_cifar" if name == "vgg" else "lenet5", model_kwargs=kw,
                        config={"epochs": cfg.epochs, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": 0})
        return model.eval(), f"trained here for {cfg.epochs} epochs ({secs:.0f} s), cached at {ck}", data
    return model.eval(), f"SMOKE model: {args.max_train_steps} training steps only ({secs:.0f} s), not cached", data


# ------------------------------------------------------------------------------------------------ evaluation
def _acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == y).double().mean())


def _energy(snn) -> dict:
    e32, e8, e8m = snn.energy(FP32), snn.energy(INT8), snn.energy(INT8_MULT_ONLY)
    return {"fp32": e32["ratio"], "fp32_approx": e32["ratio_approx"], "int8": e8["ratio"],
            "int8_approx": e8["ratio_approx"], "int8_mult_only": e8m["ratio"], "macs": e32["macs"],
            "additions": e32["additions"], "approx_additions": e32["approx_additions"]}


def evaluate_model(name: str, args) -> dict:
    t_start = time.perf_counter()
    model, weights, d = load_model(name, args)
    x, y, calib = d["x"], d["y"], d["calib"]
    code = PhaseCode(args.T, args.Q)
    rec: dict = {"model": name, "weights": weights, "dataset": d["dataset"], "test_images": len(y),
                 "calib_images": len(calib), "T": code.T, "Q": code.Q, "seconds": {}}
    with torch.no_grad():
        ann_logits = torch.cat([model(x[i:i + args.batch]) for i in range(0, len(x), args.batch)])
    rec["ann"] = _acc(ann_logits, y)
    ann_pred = ann_logits.argmax(1)

    def run(snn, xs=x, ys=y, preds=ann_pred) -> dict:
        t0 = time.perf_counter()
        out = snn.run(xs, args.batch)
        return {"snn": _acc(out, ys), "agreement": 100.0 * float((out.argmax(1) == preds).double().mean()),
                "seconds": time.perf_counter() - t0}

    # headline: T = 16, Q = 1.3, Tw = T
    t0 = time.perf_counter()
    snn = convert(model, calib, code, mode="functional")
    rec["seconds"]["convert"] = time.perf_counter() - t0
    r = run(snn)
    rec.update(snn=r["snn"], loss=rec["ann"] - r["snn"], agreement=r["agreement"], energy=_energy(snn))
    rec["seconds"]["functional"] = r["seconds"]
    st = snn.layer_stats()
    rec["layers"] = [{"name": s.name, "kind": s.kind, "s_in": s.s, "spikes_per_neuron": s.spikes_per_neuron,
                      "out_neurons_per_image": s.out_neurons / len(y), "macs_per_image": s.macs / len(y),
                      "additions_per_image": s.additions / len(y),
                      "ratio_fp32": (s.macs * FP32.e_mac / (s.additions * FP32.e_add)) if s.additions else None}
                     for s in st]
    hidden = [s for s in st if s.out_neurons]
    rec["input_spikes_per_pixel"] = st[0].s
    rec["hidden_spikes_per_neuron"] = sum(s.out_spikes for s in hidden) / max(1, sum(s.out_neurons for s in hidden))
    rec["adds_per_mac"] = rec["energy"]["additions"] / rec["energy"]["macs"]
    print(f"{name}: ANN {rec['ann']:.2f} SNN {rec['snn']:.2f} agree {rec['agreement']:.1f} "
          f"E {rec['energy']['fp32']:.2f} / INT8 {rec['energy']['int8']:.2f}", flush=True)

    # Table VIII: wait sweep, exact mode (same lambdas: only the code changes)
    sidx = _subset(len(y), args.sweep_limit) if args.sweep_limit else torch.arange(len(y))
    rec["sweep_images"] = len(sidx)
    rec["tw_sweep"] = {}
    snn.set_mode("exact")
    for tw in args.tw:
        snn.set_code(code.replace(Tw=tw))
        r = run(snn, x[sidx], y[sidx], ann_pred[sidx])
        rec["tw_sweep"][tw] = {"snn": r["snn"], "agreement": r["agreement"], "energy_fp32": _energy(snn)["fp32"],
                               "seconds": r["seconds"]}
        print(f"  Tw {tw}: SNN {r['snn']:.2f} ({r['seconds']:.0f} s)", flush=True)
    snn.set_code(code).set_mode("functional")

    # ablations (functional mode)
    abl = {}
    snn.set_code(code.replace(shift=False))
    r = run(snn)
    abl["no_shift"] = {"snn": r["snn"], "energy_fp32": _energy(snn)["fp32"]}
    snn.set_code(code)
    for key, kw in (("single_spike_input", dict(input_coding="single")), ("int8", dict(int8=True)),
                    ("layer_wise", dict(channel_wise=False))):
        s2 = convert(model, calib, code, mode="functional", **kw)
        r = run(s2)
        abl[key] = {"snn": r["snn"], "agreement": r["agreement"], **{f"energy_{k}": v for k, v in _energy(s2).items()
                                                                       if k in ("fp32", "int8", "int8_mult_only")}}
        if key == "single_spike_input":
            abl[key]["input_spikes_per_pixel"] = s2.layer_stats()[0].s
        print(f"  {key}: SNN {r['snn']:.2f}", flush=True)
    rec["ablations"] = abl
    rec["seconds"]["total"] = time.perf_counter() - t_start
    return rec


# ------------------------------------------------------------------------------------------------ report
def write_md(res: dict, path: Path) -> None:
    runs = {k: res["models"][k] for k in sorted(res["models"], key=lambda k: MODELS.index(k) if k in MODELS else 99)}
    L = [f"# One-spike SNN on CNNs (T = {res['T']}, Q = {res['Q']:g})", "",
         f"{res['machine']}, torch {res['torch']}. Commands (records merge across runs): "
         + "; ".join(f"{k}: `{r.get('command', res['command'])}` ({r.get('date', res['date'])})"
                     for k, r in runs.items())
         + ".", "",
         "Functional mode at Tw = T (exact there). λ = max over the calibration images, channel-wise for conv "
         "outputs, layer-wise for pooling and fully-connected outputs; BN folded into the weights; binary signed "
         "multi-spike input with T bits; average pool re-encoded by a neuron layer. Energy: E_MAC/E_ADD = 4.6/0.9 pJ "
         "(FP32), 0.23/0.03 pJ (INT8; 0.2/0.03 in the 'mult only' column), exact additions = spikes × per-neuron "
         "fan-out, 'approx' = s_l × MAC_l (the paper's); neuron updates, pooling and memory traffic not counted.", ""]
    L += ["## Weights and data", ""]
    for k, r in runs.items():
        L.append(f"- **{k}**: {r['weights']}; {r['dataset']}, {r['test_images']} test images "
                 f"({r['sweep_images']} in the Tw sweep), {r['calib_images']} calibration images.")
    L += ["", "## Accuracy and energy (Tables I/IV, VI)", "",
          "| model | ANN % | SNN % | loss (pp) | agreement % | E FP32 (exact / approx) | E INT8 | E INT8 mult only | "
          "INT8-weight SNN % | paper ANN / SNN / E / INT8 SNN / E INT8 |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for k, r in runs.items():
        e, p = r["energy"], PAPER.get(k.split("-")[0])
        ps = f"{p['ann']} / {p['snn']} / {p['e_fp32']} / {p['int8_snn']} / {p['e_int8']}" if p else "–"
        L.append(f"| {k} | {r['ann']:.2f} | {r['snn']:.2f} | {r['loss']:.2f} | {r['agreement']:.1f} | "
                 f"{e['fp32']:.2f} / {e['fp32_approx']:.2f} | {e['int8']:.2f} | {e['int8_mult_only']:.2f} | "
                 f"{r['ablations']['int8']['snn']:.2f} | {ps} |")
    L += ["", "## Ablations (Table VII, Fig. 7, layer-wise λ)", "",
          "| model | SNN % | single-spike input SNN % | its E FP32 | input spikes/pixel (binary → single) | "
          "no threshold shift SNN % | layer-wise λ SNN % | paper single-spike SNN / E |",
          "|---|---:|---:|---:|---:|---:|---:|---|"]
    for k, r in runs.items():
        a, p = r["ablations"], PAPER.get(k.split("-")[0])
        ps = f"{p['single_snn']} / {p['single_e']}" if p else "–"
        L.append(f"| {k} | {r['snn']:.2f} | {a['single_spike_input']['snn']:.2f} | "
                 f"{a['single_spike_input']['energy_fp32']:.2f} | {r['input_spikes_per_pixel']:.2f} → "
                 f"{a['single_spike_input']['input_spikes_per_pixel']:.2f} | {a['no_shift']['snn']:.2f} | "
                 f"{a['layer_wise']['snn']:.2f} | {ps} |")
    tws = sorted({int(t) for r in runs.values() for t in r["tw_sweep"]})
    L += ["", "## Wait sweep, exact mode (Table VIII)", "",
          "| model | " + " | ".join(f"Tw={t}" for t in tws) + " | functional | ANN |",
          "|---|" + "---:|" * (len(tws) + 2)]
    for k, r in runs.items():
        sw = {int(t): v for t, v in r["tw_sweep"].items()}
        L.append(f"| {k} | " + " | ".join(f"{sw[t]['snn']:.2f}" if t in sw else "–" for t in tws)
                 + f" | {r['snn']:.2f} | {r['ann']:.2f} |")
        if k in PAPER:
            L.append(f"| paper {k} | " + " | ".join(str(PAPER[k]["tw"].get(t, "–")) for t in tws)
                     + f" | {PAPER[k]['snn']} | {PAPER[k]['ann']} |")
    if any(r["sweep_images"] != r["test_images"] for r in runs.values()):
        L.append("\n(The sweep runs on the sweep subset; its 'functional' column is on all test images.)")
    L += ["", "## Spikes per neuron per layer", ""]
    for k, r in runs.items():
        L += [f"**{k}**: input {r['input_spikes_per_pixel']:.2f} spikes per pixel, hidden "
              f"{r['hidden_spikes_per_neuron']:.3f} spikes per neuron, {r['adds_per_mac']:.3f} additions per MAC.", "",
              "| layer | kind | s_in (spikes per input neuron) | spikes per neuron | MACs/image | adds/image | "
              "E FP32 |", "|---|---|---:|---:|---:|---:|---:|"]
        for l in r["layers"]:
            ratio = f"{l['ratio_fp32']:.2f}" if l["ratio_fp32"] is not None and l["macs_per_image"] else "–"
            sp = f"{l['spikes_per_neuron']:.3f}" if l["out_neurons_per_image"] else "–"
            L.append(f"| {l['name']} | {l['kind']} | {l['s_in']:.3f} | {sp} | {l['macs_per_image']:.3g} | "
                     f"{l['additions_per_image']:.3g} | {ratio} |")
        L.append("")
    L += ["Timings (s): " + "; ".join(f"{k}: " + ", ".join(f"{n} {v:.0f}" for n, v in r["seconds"].items())
                                      for k, r in runs.items())]
    write_text(path, "\n".join(L) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "vgg", "lenet5"],
                    choices=list(MODELS))
    ap.add_argument("--limit", type=int, default=0, help="test images (evenly spaced); 0 = all")
    ap.add_argument("--sweep-limit", type=int, default=0, help="test images of the Tw sweep; 0 = as --limit")
    ap.add_argument("--calib", type=int, default=2000, help="calibration (training) images")
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--Q", type=float, default=1.3)
    ap.add_argument("--tw", nargs="+", type=int, default=list(range(4, 17, 2)))
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--vgg-epochs", type=int, default=40)
    ap.add_argument("--lenet-epochs", type=int, default=5)
    ap.add_argument("--max-train-steps", type=int, default=None, help="smoke runs: train this many steps, no cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/cnn_tables")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".json")
    res = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    command = "python benchmarks/cnn_tables.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in args.models:
        res["models"][name] = evaluate_model(name, args)
        # Records merge across runs, so each model keeps the command and date that produced it.
        res["models"][name].update(command=command, date=date.today().isoformat())
        res.update(T=args.T, Q=args.Q, torch=torch.__version__, date=date.today().isoformat(),
                   machine=f"{platform.machine()} {os.cpu_count()} cores, {args.threads} threads", command=command)
        write_json(path, res, indent=1)
        write_md(res, out.with_suffix(".md"))


if __name__ == "__main__":
    main()
