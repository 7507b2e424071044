"""Why ResNet-20 loses more than a point at T = 16, Q = 1.3: the network's sensitivity to the code's round-off.

A fake-quantised ANN replaces ReLU outputs by their one-spike quantisation (``spikegcn.coding.quantize`` over the
same per-channel λ = max over the calibration images as the converter; the average pool layer-wise), which is
what the SNN computes at Tw = T. The script reports, against the float ANN's predictions on ``--limit`` evenly
spaced CIFAR-10 JPEG test images:

* agreement with every ReLU (and the pool) quantised, and with only the first ReLU quantised;
* the first ReLU's quantisation error (MAPE over non-zero activations, share that underflows to 0);
* agreement when the first ReLU is instead multiplied by uniform noise 1 + U(-a, a), a = 0.13 (the code's largest
  round-off at Q = 1.3), 0.065 and 0.03: the network's intrinsic sensitivity at that layer;
* agreement with only the first ReLU quantised with finer codes.

    python benchmarks/cnn_sensitivity.py [--models resnet20 resnet20-an resnet20-fq] [--limit 2000]

Writes results/cnn_sensitivity.json and results/cnn_sensitivity.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnn_tables import VARIANTS, _calib, _subset  # noqa: E402

from spikegcn import PhaseCode  # noqa: E402
from spikegcn.coding import quantize  # noqa: E402
from spikegcn.experiments.cnn_train import default_checkpoint_path, load_checkpoint  # noqa: E402
from spikegcn.fileio import write_json, write_text  # noqa: E402
from spikegcn.vision import CIFAR_MEAN, CIFAR_STD, load_cifar10_jpg, normalize  # noqa: E402


def analyse(name: str, x: torch.Tensor, calib: torch.Tensor, batch: int = 500) -> dict:
    tag = VARIANTS[name][0] if name in VARIANTS else "jpg-ft"
    ck = default_checkpoint_path("resnet20", tag)
    model = load_checkpoint(ck, "resnet20").eval()
    sites = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)] + [("avgpool", model.avgpool)]
    lam: dict = {}

    def observe(n):
        def hook(m, i, o):
            a = o.amax(dim=(0, 2, 3)) if (o.dim() == 4 and n != "avgpool") else o.amax()
            lam[n] = torch.maximum(lam[n], a) if n in lam else a
        return hook

    hs = [m.register_forward_hook(observe(n)) for n, m in sites]
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            model(calib[i:i + batch])
    for h in hs:
        h.remove()

    def scale(n):
        s = lam[n].view(1, -1, 1, 1) if lam[n].dim() else lam[n]
        return torch.where(s > 0, s, torch.ones_like(s))

    def predict(hooks: dict) -> torch.Tensor:
        hs = [m.register_forward_hook(hooks[n]) for n, m in sites if n in hooks]
        with torch.no_grad():
            out = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
        for h in hs:
            h.remove()
        return out.argmax(1)

    def quant(n, code):
        return lambda m, i, o: quantize(o / scale(n), code) * scale(n)

    ann = predict({})
    agree = lambda p: 100.0 * float((p == ann).double().mean())  # noqa: E731
    code = PhaseCode(16, 1.3)
    first = sites[0][0]
    rec = {"checkpoint": str(ck), "first_relu": first,
           "all_quantised": agree(predict({n: quant(n, code) for n, _ in sites})),
           "first_quantised": agree(predict({first: quant(first, code)}))}
    acts = {}
    h = sites[0][1].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    with torch.no_grad():
        model(x[:batch])
    h.remove()
    a = acts["a"]
    q = quantize(a / scale(first), code) * scale(first)
    nz = a > 0
    rec["first_mape_percent"] = 100.0 * float(((q - a).abs()[nz] / a[nz]).mean())
    rec["first_underflow_percent"] = 100.0 * float((q[nz] == 0).double().mean())
    rec["first_noise"] = {}
    for amp in (0.13, 0.065, 0.03):
        g = torch.Generator().manual_seed(0)
        noisy = lambda m, i, o, amp=amp, g=g: o * (1 + amp * (2 * torch.rand(o.shape, generator=g) - 1))  # noqa
        rec["first_noise"][f"{amp:g}"] = agree(predict({first: noisy}))
    rec["first_finer"] = {f"T{T}_Q{Q:g}": agree(predict({first: quant(first, PhaseCode(T, Q))}))
                          for T, Q in ((24, 1.2), (40, 1.1), (80, 1.05))}
    return rec


def write_md(res: dict, path: Path) -> None:
    L = ["# ResNet-20: sensitivity to the one-spike code's round-off", "",
         f"{res['machine']}, torch {res['torch']}, {res['date']}. Command: `{res['command']}`. "
         f"{res['test_images']} evenly spaced CIFAR-10 JPEG test images, λ = max over {res['calib_images']} "
         "training images (per channel; the pool layer-wise), code T = 16, Q = 1.3 unless named. Agreement = % of "
         "test images whose prediction equals the float ANN's.", "",
         "| model | all ReLUs quantised | first ReLU only | first ReLU x (1 + U(-0.13, 0.13)) | x U(±0.065) | "
         "x U(±0.03) | first ReLU MAPE % (underflow % of non-zeros) | first only, T24 Q1.2 | T40 Q1.1 | T80 Q1.05 |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, r in res["models"].items():
        n, f = r["first_noise"], r["first_finer"]
        L.append(f"| {k} | {r['all_quantised']:.2f} | {r['first_quantised']:.2f} | {n['0.13']:.2f} | "
                 f"{n['0.065']:.2f} | {n['0.03']:.2f} | {r['first_mape_percent']:.1f} "
                 f"({r['first_underflow_percent']:.1f}) | {f['T24_Q1.2']:.2f} | {f['T40_Q1.1']:.2f} | "
                 f"{f['T80_Q1.05']:.2f} |")
    write_text(path, "\n".join(L) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet20-an", "resnet20-fq"],
                    choices=["resnet20", *VARIANTS])
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--calib", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/cnn_sensitivity")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    xtr, _ = load_cifar10_jpg("train")
    xte, yte = load_cifar10_jpg("test")
    x = normalize(xte[_subset(len(yte), args.limit)], CIFAR_MEAN, CIFAR_STD)
    calib = normalize(_calib(xtr, args.calib), CIFAR_MEAN, CIFAR_STD)
    res = {"models": {}, "test_images": len(x), "calib_images": len(calib), "torch": torch.__version__,
           "date": date.today().isoformat(), "machine": f"{platform.machine()} {args.threads} threads",
           "command": ("python benchmarks/cnn_sensitivity.py "
                       + " ".join(argv if argv is not None else sys.argv[1:])).strip()}
    for name in args.models:
        res["models"][name] = analyse(name, x, calib)
        print(name, json.dumps(res["models"][name]), flush=True)
    out = Path(args.out)
    write_json(out.with_suffix(".json"), res, indent=1)
    write_md(res, out.with_suffix(".md"))


if __name__ == "__main__":
    main()
