"""Vision models and data loaders (fast: well under a minute on 2 cores once the image cache exists)."""
from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx
from torch import nn

from spikegcn import datafiles
from spikegcn.datafiles import DataFileError, read_sums
from spikegcn.experiments.cnn_train import TrainConfig, evaluate, fit, load_checkpoint, save_checkpoint
from spikegcn.vision import data as D
from spikegcn.vision import loaders as L
from spikegcn.vision import models as M

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = datafiles.data_root()


def _data_file(rel: str, sha: str) -> Path | None:
    try:
        return datafiles.fetch(rel, sha, None)
    except DataFileError:
        return None


def _weights(name: str) -> Path | None:
    fname, sha = M.PRETRAINED[name]
    root = os.environ.get("SPIKEGCN_WEIGHTS")
    if root and (Path(root) / fname).is_file():
        return Path(root) / fname
    try:  # the cache, without downloading
        return datafiles.fetch(f"weights/{fname}", sha, None)
    except DataFileError:
        return None


HAVE_CIFAR = _data_file(D.CIFAR10_JPG_REL, D.CIFAR10_JPG_SHA256) is not None
HAVE_MNIST = _data_file(D.MNIST_REL, D.MNIST_SHA256) is not None
need_cifar = pytest.mark.skipif(not HAVE_CIFAR, reason="CIFAR-10 JPEG: cifar10-jpg/cifar10_jpg.zip is not under "
                                "$SPIKEGCN_DATA or the cache")
need_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="MNIST: mnist/mnist.pkl.gz is not under $SPIKEGCN_DATA or the "
                                "cache")


# --------------------------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,params", [("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586), ("resnet56", 853_018)]
)
def test_resnet_builds_with_published_size(name, params):
    model = M.get_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == int(name[6:]) - 1  # stem + 2 per block, one module per use
    assert sum(isinstance(m, M.OptionAShortcut) for m in model.modules()) == 2


def test_option_a_shortcut_subsamples_and_zero_pads():
    sc = M.OptionAShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert sc.pad_front == sc.pad_back == 8
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, :8]) == 0 and torch.count_nonzero(y[:, 24:]) == 0
    assert not list(sc.parameters())
    with pytest.raises(ValueError):
        M.OptionAShortcut(32, 16)


def test_models_trace_with_fx():
    x = torch.randn(2, 3, 32, 32)
    models = [M.get_model(n) for n in ("resnet20", "resnet32", "resnet44", "resnet56")]
    models += [M.vgg_cifar("small"), M.vgg_cifar("medium", hidden=(64,))]
    for model in models:
        model.eval()
        ref = model(x)
        for gm in (torch.fx.symbolic_trace(model), M.symbolic_trace(model)):
            torch.testing.assert_close(gm(x), ref)
    # VisionTracer keeps the shortcut as one call_module node
    gm = M.symbolic_trace(M.resnet20())
    targets = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    assert "layer2.0.shortcut" in targets and "layer3.0.shortcut" in targets
    assert not any(n.op == "call_function" and n.target is torch.nn.functional.pad for n in gm.graph.nodes)
    for net, shape in ((M.lenet5(), (2, 1, 28, 28)), (M.lenet5(in_size=8), (2, 1, 8, 8))):
        xi = torch.randn(shape)
        torch.testing.assert_close(torch.fx.symbolic_trace(net)(xi), net(xi))


def test_vgg_and_lenet_shapes():
    vgg = M.vgg_cifar("small")
    assert any(isinstance(m, nn.MaxPool2d) for m in vgg.modules())
    assert vgg(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert M.vgg_cifar([8, "M", 16, "M"], num_classes=4)(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    le = M.lenet5()
    assert le(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in le.parameters()) == 61_706  # the classic LeNet-5 size
    with pytest.raises(ValueError):
        M.get_model("resnet99")


def test_weight_recipe_matches_constants():
    sums = read_sums(ROOT / "datasets" / "weights" / "SHA256SUMS")
    assert sums == {f: s for f, s in M.PRETRAINED.values()}
    vis = read_sums(ROOT / "datasets" / "vision" / "SHA256SUMS")
    assert vis == {D.CIFAR10_JPG_REL: D.CIFAR10_JPG_SHA256, D.MNIST_REL: D.MNIST_SHA256}


def test_pretrained_resnet20_loads_strictly_and_classifies(monkeypatch):
    path = _weights("resnet20")
    if path is None:
        pytest.skip("resnet20-12fca82f.th is not under $SPIKEGCN_WEIGHTS or the cache")
    monkeypatch.setenv("SPIKEGCN_WEIGHTS", str(path.parent))
    model = M.load_pretrained("resnet20")  # strict=True inside
    assert not model.training
    if not HAVE_CIFAR:
        pytest.skip("CIFAR-10 JPEG: cifar10-jpg/cifar10_jpg.zip is not under $SPIKEGCN_DATA or the cache")
    loader = L.cifar10_loader("test", 250, subset=500, dataset="cifar10-jpg")
    assert torch.equal(torch.bincount(loader.labels), torch.full((10,), 50))
    acc = evaluate(model, loader)
    assert acc >= 0.75, acc


def test_corrupted_weights_are_refused(tmp_path, monkeypatch):
    fname, _ = M.PRETRAINED["resnet20"]
    (tmp_path / fname).write_bytes(b"not a checkpoint")
    monkeypatch.setenv("SPIKEGCN_WEIGHTS", str(tmp_path))
    with pytest.raises(DataFileError, match="corrupted"):
        M.pretrained_path("resnet20")


# --------------------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------------------
@need_cifar
def test_cifar10_loader_shapes():
    for split, n in (("train", 50_000), ("test", 10_000)):
        x, y = D.load_cifar10_jpg(split)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.int64
        assert torch.equal(torch.bincount(y), torch.full((10,), n // 10))
    xb, yb = next(iter(L.cifar10_loader("test", 64, dataset="cifar10-jpg")))
    assert xb.shape == (64, 3, 32, 32) and xb.dtype == torch.float32
    assert -2.5 < float(xb.min()) and float(xb.max()) < 2.7  # normalised with the ImageNet statistics


@need_mnist
def test_mnist_loader_shapes():
    for split, n in (("train", 50_000), ("valid", 10_000), ("test", 10_000)):
        x, y = D.load_mnist(split)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and int(y.min()) == 0 and int(y.max()) == 9
        assert float(x.min()) == 0.0 and float(x.max()) < 1.0
        assert torch.equal(x * 256, (x * 256).round())  # exact multiples of 1/256


def test_truncated_cifar_zip_raises(tmp_path, monkeypatch):
    # a checksum failure on the located file ...
    monkeypatch.setenv("SPIKEGCN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "data" / D.CIFAR10_JPG_REL
    dest.parent.mkdir(parents=True)
    src = DATA_ROOT / D.CIFAR10_JPG_REL if DATA_ROOT else None
    if src is not None and src.is_file():
        with open(src, "rb") as f:
            dest.write_bytes(f.read(1 << 20))
    else:
        dest.write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    with pytest.raises(DataFileError, match="corrupted or truncated"):
        D.load_cifar10_jpg("test")
    # ... and a structural failure when an unverified zip is passed explicitly
    with pytest.raises(DataFileError):
        D.load_cifar10_jpg("test", path=dest)
    # a wrong layout is refused too
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("test/airplane/0000.jpg", b"")
    with pytest.raises(DataFileError, match="images, expected"):
        D.decode_cifar10_zip(bad)


def test_missing_cifar_zip_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGCN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataFileError, match="no public download address"):
        D.cifar10_jpg_path()


def test_augmentation_is_deterministic_and_correct():
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8) + 1
    a = L.random_crop_flip(x, 2, generator=torch.Generator().manual_seed(5))
    b = L.random_crop_flip(x, 2, generator=torch.Generator().manual_seed(5))
    c = L.random_crop_flip(x, 2, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape
    # every output is a zero-padded shifted (possibly flipped) copy of its input
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(4):
        windows = [xp[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(2)) for w in windows)
    # uint8 works and pads with black
    u = L.random_crop_flip(torch.full((2, 3, 8, 8), 200, dtype=torch.uint8), 4, generator=torch.Generator())
    assert u.dtype == torch.uint8 and set(u.unique().tolist()) <= {0, 200}


def test_augmentation_is_device_true():
    """Crops, flips and shuffles are drawn on the generator's device and applied on the images' device: the same
    batches under a meta default device (where a tensor made without a device would land)."""
    x = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(20)
    ref = list(L.BatchLoader(x, y, 8, shuffle=True, augment=True, seed=5))
    with torch.device("meta"):
        out = list(L.BatchLoader(x, y, 8, shuffle=True, augment=True, seed=5))
        crop = L.random_crop_flip(x, 4, generator=torch.Generator().manual_seed(1))
    assert crop.device.type == "cpu"
    assert torch.equal(crop, L.random_crop_flip(x, 4, generator=torch.Generator().manual_seed(1)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ref, out, strict=True))


def test_batch_loader_epochs_are_reproducible():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(50)
    def mk():
        return L.BatchLoader(x, y, 16, shuffle=True, augment=True, mean=(0.5,) * 3, std=(0.25,) * 3, seed=3)

    l1, l2 = mk(), mk()
    assert len(l1) == 4
    e1 = [b for b in l1]
    e2 = [b for b in l1]
    assert torch.equal(torch.cat([b[1] for b in e1]).sort().values, y)
    assert not torch.equal(e1[0][1], e2[0][1])  # a new shuffle each epoch
    l2.set_epoch(1)
    for (xa, ya), (xb, yb) in zip(e2, l2):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    dl = L.tensor_dataloader(x, y, 16, shuffle=True, seed=1)
    assert sum(len(b[1]) for b in dl) == 50


def test_lenet5_learns_digits(tmp_path):
    torch.manual_seed(0)
    model = M.lenet5(in_size=8)
    t0 = time.perf_counter()
    cfg = TrainConfig(epochs=15, lr=0.05, weight_decay=1e-4, seed=0)
    train_loader = L.digits_loader("train", 32, seed=0)
    hist = fit(model, train_loader, cfg, progress=False)
    acc = evaluate(model, L.digits_loader("test", 256))
    assert acc > 0.90, (acc, hist["loss"])
    assert time.perf_counter() - t0 < 30
    # same seed -> same weights
    torch.manual_seed(0)
    again = M.lenet5(in_size=8)
    fit(again, L.digits_loader("train", 32, seed=0), TrainConfig(epochs=1, lr=0.05, seed=0), progress=False)
    torch.manual_seed(0)
    twin = M.lenet5(in_size=8)
    fit(twin, L.digits_loader("train", 32, seed=0), TrainConfig(epochs=1, lr=0.05, seed=0), progress=False)
    for p, q in zip(again.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    # checkpoint round trip
    path = save_checkpoint(tmp_path / "ck" / "lenet.pt", model, arch="lenet5", model_kwargs={"in_size": 8})
    back = load_checkpoint(path)
    assert evaluate(back, L.digits_loader("test", 256)) == acc


def test_activation_noise_training_is_seeded_train_only_and_removed():
    with pytest.raises(ValueError, match="activation_noise"):
        TrainConfig(activation_noise=1.5)

    def train(noise: float) -> nn.Module:
        torch.manual_seed(0)
        m = M.lenet5(in_size=8)
        cfg = TrainConfig(epochs=1, lr=0.05, seed=0, activation_noise=noise, max_steps=5)
        fit(m, L.digits_loader("train", 32, seed=0), cfg, progress=False)
        return m

    a, b, plain = train(0.13), train(0.13), train(0.0)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)  # same seed, same noise
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), plain.parameters()))  # noise was applied
    # hooks are gone after fit: eval and train forwards are deterministic and noise-free
    x = torch.rand(4, 1, 8, 8)
    assert all(not m._forward_hooks for m in a.modules())
    a.train()
    assert torch.equal(a(x), a(x))
    with pytest.raises(ValueError, match="nn.ReLU"):
        fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), L.digits_loader("train", 32, seed=0),
            TrainConfig(epochs=1, max_steps=1, activation_noise=0.1), progress=False)


def test_fake_quant_training_quantises_relu_outputs_with_straight_through_gradients():
    from spikegcn.coding import PhaseCode, quantize
    from spikegcn.experiments.cnn_train import _relu_hooks

    code = PhaseCode(16, 1.3)
    with pytest.raises(ValueError, match="exclusive"):
        TrainConfig(activation_noise=0.1, fake_quant=code)
    with pytest.raises(TypeError, match="PhaseCode"):
        TrainConfig(fake_quant=(16, 1.3))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    x = torch.randn(8, 1, 6, 6)
    ref = net(x).detach()
    with _relu_hooks(net, TrainConfig(fake_quant=code)):
        net.train()
        out = net(x)
        lam = ref.amax(dim=(0, 2, 3), keepdim=True)
        torch.testing.assert_close(out, quantize(ref / lam, code) * lam)  # per-channel batch max, the code's grid
        assert not torch.equal(out, ref)
        out.sum().backward()  # straight-through: the gradient of the plain ReLU network
        g = net[0].weight.grad.clone()
        net.zero_grad()
        net.eval()
        assert torch.equal(net(x), ref)  # eval forwards are untouched
    assert all(not m._forward_hooks for m in net.modules())  # removed on exit
    net.train()
    net(x).sum().backward()
    torch.testing.assert_close(net[0].weight.grad, g)


def test_fake_quant_window_uses_the_running_maximum_and_quantises_pools():
    from spikegcn.coding import PhaseCode, quantize
    from spikegcn.experiments.cnn_train import _relu_hooks

    code = PhaseCode(16, 1.3)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="fake_quant_window"):
            TrainConfig(fake_quant=code, fake_quant_window=bad)
    assert TrainConfig(fake_quant=code, fake_quant_window=np.int64(3)).fake_quant_window == 3
    with pytest.raises(ValueError, match="needs fake_quant"):
        TrainConfig(fake_quant_window=4)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    big, small = 3 * torch.randn(8, 1, 6, 6), 0.1 * torch.randn(8, 1, 6, 6)
    with torch.no_grad():
        a_big, a_small = net[0](big).relu(), net[0](small).relu()
    chan = dict(dim=(0, 2, 3), keepdim=True)
    lam_big, lam_small = a_big.amax(**chan).clamp_min(1e-12), a_small.amax(**chan).clamp_min(1e-12)
    seen = []
    with _relu_hooks(net, TrainConfig(fake_quant=code, fake_quant_window=2)):
        # registered after the fake-quant hook, so it sees the quantised ReLU output
        h = net[1].register_forward_hook(lambda m, i, o: seen.append(o.detach()))
        net.train()
        out = net(small)  # first batch: its own maxima; the pool is quantised too, one scale per layer
        torch.testing.assert_close(seen[-1], quantize(a_small / lam_small, code) * lam_small)
        pooled = seen[-1].mean(dim=(2, 3), keepdim=True)
        torch.testing.assert_close(out, quantize(pooled / pooled.max(), code) * pooled.max())
        net(big)
        net(small)  # the big batch's maxima are still in the window of 2
        lam = torch.maximum(lam_big, lam_small)
        torch.testing.assert_close(seen[-1], quantize(a_small / lam, code) * lam)
        net(small)  # ... and have dropped out of it now
        torch.testing.assert_close(seen[-1], quantize(a_small / lam_small, code) * lam_small)
        h.remove()
    with _relu_hooks(net, TrainConfig(fake_quant=code)):  # window 1: pools are left alone
        h = net[1].register_forward_hook(lambda m, i, o: seen.append(o.detach()))
        net.train()
        out = net(small)
        torch.testing.assert_close(out, seen[-1].mean(dim=(2, 3), keepdim=True))
        h.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())  # pool hooks too


def test_fake_quant_window_mirrors_the_converters_scales_per_call_site():
    """With a window: one scale per layer for fully-connected outputs (the converter's layer-wise λ), one window
    per call site of a reused module, and nothing left registered afterwards."""
    from spikegcn.coding import PhaseCode, quantize
    from spikegcn.experiments.cnn_train import _relu_hooks

    code = PhaseCode(16, 1.3)
    torch.manual_seed(0)

    class Shared(nn.Module):  # one ReLU module applied at two sites, as many user models do
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.relu = nn.Linear(6, 5), nn.Linear(5, 4), nn.ReLU()

        def forward(self, x):
            return self.relu(self.fc2(self.relu(self.fc1(x))))

    net = Shared()
    x_big, x_small = 4 * torch.randn(16, 6), 0.2 * torch.randn(16, 6)

    def fq(v, lam):
        return quantize(v / lam, code) * lam

    def sites(x, lam1):  # ReLU outputs at the two sites, site 1 quantised with lam1
        h = net.fc1(x).relu()
        return h, net.fc2(fq(h, lam1)).relu()

    with torch.no_grad(), _relu_hooks(net, TrainConfig(fake_quant=code, fake_quant_window=2)):
        net.train()
        h, _ = sites(x_big, 1.0)
        l1 = h.amax()  # one scalar per layer, not per feature
        _, z = sites(x_big, l1)
        l2 = z.amax()
        torch.testing.assert_close(net(x_big), fq(z, l2))
        # second batch: each site keeps its own window (a shared window would mix l1 into site 2)
        h, _ = sites(x_small, 1.0)
        l1s = torch.maximum(l1, h.amax())
        _, z = sites(x_small, l1s)
        l2s = torch.maximum(l2, z.amax())
        assert l2s < l1s  # the test separates the two sites
        torch.testing.assert_close(net(x_small), fq(z, l2s))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    with torch.no_grad(), _relu_hooks(net, TrainConfig(fake_quant=code, fake_quant_window=2)):
        net.train()  # a new fit starts with empty windows: the big batch no longer counts
        h, _ = sites(x_small, 1.0)
        _, z = sites(x_small, h.amax())
        torch.testing.assert_close(net(x_small), fq(z, z.amax()))
    with torch.no_grad(), _relu_hooks(net, TrainConfig(fake_quant=code)):
        net.train()  # window 1: per-feature batch maxima, as before
        h = net.fc1(x_big).relu()
        z = net.fc2(fq(h, h.amax(0, keepdim=True).clamp_min(1e-12))).relu()
        torch.testing.assert_close(net(x_big), fq(z, z.amax(0, keepdim=True).clamp_min(1e-12)))


def test_freeze_bn_keeps_running_statistics():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
    before = [b.clone() for b in m[1].buffers()]
    w_before = m[1].weight.detach().clone()
    # two epochs with validation: evaluate() switches the model back and forth, BN must stay frozen throughout
    fit(m, L.digits_loader("train", 32, seed=0),
        TrainConfig(epochs=2, lr=0.05, max_steps=6, freeze_bn=True), val_loader=L.digits_loader("test", 256),
        progress=False)
    for b, c in zip(before, m[1].buffers()):
        assert torch.equal(b, c)
    assert not torch.equal(w_before, m[1].weight)  # the affine parameters still train
    fit(m, L.digits_loader("train", 32, seed=0), TrainConfig(epochs=1, lr=0.05, max_steps=3), progress=False)
    assert not torch.equal(before[0], m[1].running_mean)


# --------------------------------------------------------------------------------------------------------------------
# CIFAR-10, official python release (a small archive in the official format, written here)
# --------------------------------------------------------------------------------------------------------------------
def _write_cifar_release(folder: Path, n: int = 4) -> tuple[Path, dict[str, np.ndarray]]:
    """``cifar-10-python.tar.gz`` and its unpacked ``cifar-10-batches-py`` (n images per batch) under ``folder``."""
    import pickle
    import tarfile

    from spikegcn.vision import cifar as C

    rng = np.random.default_rng(0)
    batches = folder / C.CIFAR10_FOLDER
    batches.mkdir(parents=True)
    images = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        images[name] = data
        d = {b"batch_label": name.encode(), b"labels": [(i + j) % 10 for j in range(n)], b"data": data,
             b"filenames": [f"{name}_{j}.png".encode() for j in range(n)]}
        (batches / name).write_bytes(pickle.dumps(d, protocol=2))
    (batches / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in D.CIFAR10_CLASSES]}))
    archive = folder / C.CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(batches, arcname=C.CIFAR10_FOLDER)
    return archive, images


def test_cifar10_official_release_archive_and_folder(tmp_path, monkeypatch):
    from spikegcn.vision import cifar as C

    monkeypatch.setenv("SPIKEGCN_DATA", str(tmp_path / "nodata"))
    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "cache"))
    archive, images = _write_cifar_release(tmp_path / "release")
    for path in (archive, archive.parent / C.CIFAR10_FOLDER, archive.parent):  # archive, folder, torchvision root
        x, y = C.load_cifar10("train", path=path)
        assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
        # the first 1024 bytes of a row are the red plane, row-major
        assert torch.equal(x[0, 0].flatten(), torch.from_numpy(images["data_batch_1"][0, :1024]))
        assert torch.equal(x[4, 2].flatten(), torch.from_numpy(images["data_batch_2"][0, 2048:]))
        assert y[:5].tolist() == [0, 1, 2, 3, 1]
        xt, yt = C.load_cifar10("test", path=path)
        assert xt.shape == (4, 3, 32, 32) and yt.tolist() == [5, 6, 7, 8]
    with pytest.raises(ValueError, match="split must be"):
        C.load_cifar10("valid", path=archive)


def test_cifar10_official_release_found_and_verified(tmp_path, monkeypatch):
    """Under $SPIKEGCN_DATA/cifar10 the release is checked against the published checksums: a batch that is not
    the published one is refused naming the file; with the checksums of this small release it loads."""
    import hashlib
    import shutil

    from spikegcn.vision import cifar as C

    monkeypatch.setenv("SPIKEGCN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "cache"))
    archive, _ = _write_cifar_release(tmp_path / "data" / "cifar10")
    archive.unlink()
    with pytest.raises(DataFileError, match="data_batch_1 is corrupted or truncated"):
        C.load_cifar10("test")
    sums = {name: hashlib.md5((archive.parent / C.CIFAR10_FOLDER / name).read_bytes()).hexdigest()
            for name in C.CIFAR10_BATCH_MD5}
    monkeypatch.setattr(C, "CIFAR10_BATCH_MD5", sums)
    x, y = C.load_dataset("cifar10", "test")
    assert x.shape == (4, 3, 32, 32)
    xb, yb = next(iter(L.cifar10_loader("test", 4, dataset="cifar10")))
    assert xb.dtype == torch.float32 and torch.equal(yb, y)
    # a truncated batch is named
    with open(archive.parent / C.CIFAR10_FOLDER / "test_batch", "r+b") as f:
        f.truncate(100)
    sums["test_batch"] = hashlib.md5((archive.parent / C.CIFAR10_FOLDER / "test_batch").read_bytes()).hexdigest()
    with pytest.raises(DataFileError, match="test_batch is not a CIFAR-10 batch"):
        C.load_cifar10("test")
    # an archive found there is checked against the release's sha256
    shutil.rmtree(archive.parent / C.CIFAR10_FOLDER)
    _write_cifar_release(tmp_path / "other")
    shutil.copy(tmp_path / "other" / C.CIFAR10_ARCHIVE, archive)
    with pytest.raises(DataFileError, match="corrupted or truncated"):
        C.load_cifar10("test")


def test_cifar10_official_release_missing_or_broken(tmp_path, monkeypatch):
    from spikegcn.vision import cifar as C

    monkeypatch.setenv("SPIKEGCN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(C, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # refused at once
    with pytest.raises(DataFileError, match="cifar10/cifar-10-python.tar.gz' not found .* download from"):
        C.load_cifar10("test")
    with pytest.raises(DataFileError, match="no CIFAR-10 python release at"):
        C.load_cifar10("test", path=tmp_path)
    bad = tmp_path / "bad" / C.CIFAR10_ARCHIVE
    bad.parent.mkdir()
    bad.write_bytes(b"\x1f\x8b" + b"\0" * 50)
    with pytest.raises(DataFileError, match="not a readable CIFAR-10 archive"):
        C.load_cifar10("test", path=bad)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        C.load_dataset("imagenet", "test")
