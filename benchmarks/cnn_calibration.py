"""Does the λ statistic or the calibration set explain the ResNet-20 conversion loss at T = 16, Q = 1.3?

Converts each model with λ = the per-channel max (the default, docs/method.md, A4) or a percentile (99.999, 99.99,
99.9 %) of the ReLU outputs over ``--calib`` random training images, and measures the loss (ANN - SNN accuracy,
points) and the agreement with the ANN's predictions on two sets:

* **val**: the last ``--val`` training images of the calibration order, never used for calibration (the set to
  choose a setting on: the test images must not be used for that). The network was fine-tuned on them, so its
  accuracy there is higher than on unseen images; settings are ranked by agreement with the ANN, which is finer
  than the loss (a difference of two accuracies);
* **test**: all (or ``--limit``) CIFAR-10 JPEG test images, reported for reference.

Functional mode at Tw = T (exact there). A percentile keeps every ReLU output of the calibration images (about
190,000 values per image for ResNet-20, float64): about 3 GB for 2000 images and 8 GB for 5000.

    python benchmarks/cnn_calibration.py [--models resnet20 resnet20-fqw16] [--calib 2000 5000]

Writes results/cnn_calibration.json and results/cnn_calibration.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnn_tables import VARIANTS, _subset  # noqa: E402

from spikegcn import PhaseCode, convert  # noqa: E402
from spikegcn.experiments.cnn_train import default_checkpoint_path, load_checkpoint  # noqa: E402
from spikegcn.fileio import write_json, write_text  # noqa: E402
from spikegcn.vision import CIFAR_MEAN, CIFAR_STD, load_cifar10_jpg, normalize  # noqa: E402

PERCENTILES = (None, 99.999, 99.99, 99.9)


def _predict(f, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([f(x[i:i + batch]) for i in range(0, len(x), batch)]).argmax(1)


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((pred == y).double().mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet20-fqw16"], choices=["resnet20", *VARIANTS])
    ap.add_argument("--calib", nargs="+", type=int, default=[2000, 5000], help="calibration set sizes")
    ap.add_argument("--val", type=int, default=5000, help="training images, never calibrated on, to rank settings")
    ap.add_argument("--limit", type=int, default=0, help="test images (evenly spaced); 0 = all")
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--Q", type=float, default=1.3)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/cnn_calibration")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    xtr, ytr = load_cifar10_jpg("train")
    xte, yte = load_cifar10_jpg("test")
    perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))  # cnn_tables' calibration order
    if max(args.calib) > len(perm) - args.val:
        raise SystemExit("--calib + --val exceed the 50,000 training images")
    val = perm[len(perm) - args.val:]  # a fixed tail: disjoint from every calibration prefix
    sets = {"val": (normalize(xtr[val], CIFAR_MEAN, CIFAR_STD), ytr[val])}
    idx = _subset(len(yte), args.limit)
    sets["test"] = (normalize(xte[idx], CIFAR_MEAN, CIFAR_STD), yte[idx])
    code = PhaseCode(args.T, args.Q)
    res: dict = {"T": code.T, "Q": code.Q, "val_images": args.val, "test_images": len(idx), "models": {},
                 "machine": f"{platform.machine()} {args.threads} threads", "torch": torch.__version__,
                 "date": date.today().isoformat(), "command": "python benchmarks/cnn_calibration.py "
                 + " ".join(argv if argv is not None else sys.argv[1:])}
    for name in args.models:
        tag = VARIANTS[name][0] if name in VARIANTS else "jpg-ft"
        model = load_checkpoint(default_checkpoint_path("resnet20", tag), "resnet20").eval()
        ann = {k: _predict(model, x, args.batch) for k, (x, _) in sets.items()}
        rec = {"ann": {k: _acc(ann[k], y) for k, (_, y) in sets.items()}, "runs": []}
        for n in args.calib:
            calib = normalize(xtr[perm[:n]], CIFAR_MEAN, CIFAR_STD)
            for p in PERCENTILES:
                t0 = time.perf_counter()
                snn = convert(model, calib, code, mode="functional", percentile=p)
                run = {"calib": n, "percentile": p}
                for k, (x, y) in sets.items():
                    pred = _predict(snn, x, args.batch)
                    run[k] = {"snn": _acc(pred, y), "loss": rec["ann"][k] - _acc(pred, y),
                              "agreement": _acc(pred, ann[k])}
                run["seconds"] = time.perf_counter() - t0
                rec["runs"].append(run)
                print(f"{name} calib {n} λ {p or 'max'}: val loss {run['val']['loss']:.2f} "
                      f"test loss {run['test']['loss']:.2f} ({run['seconds']:.0f} s)", flush=True)
        res["models"][name] = rec
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), res, indent=2)
    write_md(res, out.with_suffix(".md"))


def write_md(res: dict, path: Path) -> None:
    L = [f"# ResNet-20: λ statistic and calibration set (T = {res['T']}, Q = {res['Q']:g})", "",
         f"{res['machine']}, torch {res['torch']}, {res['date']}. Command: `{res['command']}`. Functional mode at "
         f"Tw = T. val = {res['val_images']} training images never used for calibration (for choosing a setting; "
         f"the network was fine-tuned on them, so its accuracy there is higher than on unseen images); test = "
         f"{res['test_images']} CIFAR-10 JPEG test images (for reference only). Loss = ANN - SNN "
         "accuracy in points; agreement = % of images whose SNN prediction equals the ANN's.", "",
         "| model | calibration images | λ | val loss (pp) | val agreement % | test loss (pp) | test agreement % |",
         "|---|---:|---|---:|---:|---:|---:|"]
    for name, rec in res["models"].items():
        for r in rec["runs"]:
            lam = "max" if r["percentile"] is None else f"{r['percentile']:g} %"
            L.append(f"| {name} (ANN val {rec['ann']['val']:.2f} / test {rec['ann']['test']:.2f}) | {r['calib']} | "
                     f"{lam} | {r['val']['loss']:.2f} | {r['val']['agreement']:.2f} | {r['test']['loss']:.2f} | "
                     f"{r['test']['agreement']:.2f} |")
    for name, rec in res["models"].items():
        best = max(rec["runs"], key=lambda r: r["val"]["agreement"])
        lam = "max" if best["percentile"] is None else f"{best['percentile']:g} %"
        line = (f"\n**{name}**: the highest val agreement is {best['calib']} calibration images, λ = {lam} "
                f"({best['val']['agreement']:.2f} %, val loss {best['val']['loss']:.2f} pp); on the test images it "
                f"loses {best['test']['loss']:.2f} pp")
        dflt = next((r for r in rec["runs"] if r["percentile"] is None and r["calib"] == 2000), None)
        if dflt is not None:  # cnn_tables' setting
            line += f", against {dflt['test']['loss']:.2f} pp for cnn_tables' setting (2000 images, λ = max)"
        L.append(line + ".")
    write_text(path, "\n".join(L) + "\n")


if __name__ == "__main__":
    main()
