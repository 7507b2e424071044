"""Measure the vision baseline numbers into results/vision_baseline.json (run from the repo root)."""
import json
import os
import platform
import time

import torch

from spikegcn.datafiles import cache_dir
from spikegcn.experiments.cnn_train import TrainConfig, evaluate
from spikegcn.experiments.cnn_train import fit as train
from spikegcn.fileio import write_json
from spikegcn.vision import data as D
from spikegcn.vision import loaders as L
from spikegcn.vision.models import PRETRAINED, load_pretrained, pretrained_path, vgg_cifar

out = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                   "python": platform.python_version(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                   "loadavg_start": os.getloadavg()}}
# 1. decode + cache (cold: a fresh cache folder)
t0 = time.perf_counter()
p = D.cifar10_jpg_path()
t_sha = time.perf_counter() - t0
t0 = time.perf_counter()
D.load_cifar10_jpg_arrays("train", cache=True)
t_first = time.perf_counter() - t0
meta = json.loads((cache_dir() / "cifar10_jpg" / D.CIFAR10_JPG_SHA256[:16] / "meta.json").read_text())
t0 = time.perf_counter()
D.load_cifar10_jpg("train")
D.load_cifar10_jpg("test")
t_cached = time.perf_counter() - t0
out["cifar10_jpg_decode"] = {"images": 60000, "zip_sha256_seconds": round(t_sha, 3),
    "decode_seconds": round(meta["decode_seconds"], 2), "decode_and_cache_seconds": round(t_first, 2),
    "cached_load_both_splits_seconds": round(t_cached, 3), "pillow": meta.get("pillow"), "single_process": True}
print(out["cifar10_jpg_decode"], flush=True)
# 2. pretrained accuracy on the full 10k JPEG test set
test = L.cifar10_loader("test", 500, dataset="cifar10-jpg")
acc = {}
for name in PRETRAINED:
    m = load_pretrained(name)
    t0 = time.perf_counter()
    a = evaluate(m, test)
    dt = time.perf_counter() - t0
    ck = torch.load(pretrained_path(name), map_location="cpu", weights_only=True)
    acc[name] = {"jpeg_test_acc": round(100 * a, 2), "published_png_acc": round(float(ck["best_prec1"]), 2),
                 "eval_seconds": round(dt, 1), "params": sum(p.numel() for p in m.parameters())}
    print(name, acc[name], flush=True)
out["pretrained_jpeg_test"] = acc
# 3. ResNet-20 training speed on the JPEG train set (batch 128, crop+flip, SGD momentum)
loader = L.cifar10_loader("train", 128, seed=0, dataset="cifar10-jpg")
m = load_pretrained("resnet20")
train(m, loader, TrainConfig(epochs=1, lr=0.01, max_steps=10), progress=False)  # warm-up
nsteps = int(os.environ.get("NSTEPS", 200))
h = train(m, loader, TrainConfig(epochs=1, lr=0.01, max_steps=nsteps), progress=False)
out["resnet20_train_speed"] = {
    "batch_size": 128, "steps_measured": h["steps"], "seconds_per_step": round(h["seconds_per_step"], 4),
    "steps_per_epoch": len(loader), "extrapolated_epoch_seconds": round(h["seconds_per_step"] * len(loader), 1),
    "images_per_second": round(128 / h["seconds_per_step"], 1)}
print(out["resnet20_train_speed"], flush=True)
# 4. same for the default VGG (small) as a planning number
torch.manual_seed(0)
v = vgg_cifar("small")
train(v, loader, TrainConfig(epochs=1, lr=0.05, max_steps=10), progress=False)
h = train(v, loader, TrainConfig(epochs=1, lr=0.05, max_steps=100), progress=False)
out["vgg_small_train_speed"] = {
    "batch_size": 128, "steps_measured": h["steps"], "seconds_per_step": round(h["seconds_per_step"], 4),
    "extrapolated_epoch_seconds": round(h["seconds_per_step"] * len(loader), 1)}
print(out["vgg_small_train_speed"], flush=True)
out["machine"]["loadavg_end"] = os.getloadavg()
write_json("results/vision_baseline.json", out, indent=1)
