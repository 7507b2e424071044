r"""CIFAR-10 in its official python release, and every image dataset by name.

The release (https://www.cs.toronto.edu/~kriz/cifar.html) is ``cifar-10-python.tar.gz``; unpacked (as torchvision
leaves it under its root) it is the folder ``cifar-10-batches-py`` with the pickled batches ``data_batch_1`` ..
``data_batch_5`` (training, 50,000 images) and ``test_batch`` (10,000), each a dict with ``b"data"`` (``uint8
[10000, 3072]``, the red, green and blue planes of each 32x32 image) and ``b"labels"``. :func:`load_cifar10` looks
for it, in order:

1. ``path``, when given: the archive, the ``cifar-10-batches-py`` folder, or a folder holding either (e.g. a
   torchvision root). Read as it is, without the published checksums (its structure is still checked);
2. ``$SPIKEGCN_DATA/cifar10/`` and then ``cache_dir()/cifar10/``, holding the archive or the folder;
3. else the archive is downloaded into ``cache_dir()/cifar10/``.

Files found in 2. or downloaded are checked against the release's published checksums (the archive's sha256, whose
md5 is ``c58f30108f718f92721af3b95e74349a``; for a folder, the md5 of every batch as torchvision lists them), so a
truncated file raises :class:`~spikegcn.datafiles.DataFileError` naming it.

The project's own CNN results use the JPEG version of CIFAR-10 (the dataset ``cifar10-jpg``, see
:func:`spikegcn.vision.data.load_cifar10_jpg`); :func:`load_dataset` returns any of the datasets by name.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..datafiles import DataFileError, cache_dir, data_root, fetch, verify

__all__ = ["CIFAR10_URL", "CIFAR10_ARCHIVE_SHA256", "CIFAR10_ARCHIVE_MD5", "CIFAR10_BATCH_MD5", "DATASETS",
           "cifar10_python_path", "load_cifar10_python_arrays", "load_cifar10", "load_dataset", "preprocess"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
#: md5 of the unpacked batches (as published with torchvision's CIFAR10).
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_SPLIT_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

#: Image datasets by name: what each is (the CNN commands take these names).
DATASETS = {
    "cifar10": "CIFAR-10, the official python release (lossless)",
    "cifar10-jpg": "CIFAR-10 as 32x32 JPEGs at quality 75 (the images of the project's CNN results)",
    "mnist": "MNIST, the classic pickle (raw [0, 1) pixels)",
}
PathLike = Union[str, os.PathLike]


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _in(folder: Path) -> Optional[Path]:
    """The release inside ``folder``: the batches folder, itself, or the archive."""
    for cand in (folder / CIFAR10_FOLDER, folder):
        if (cand / "test_batch").is_file():
            return cand
    return folder / CIFAR10_ARCHIVE if (folder / CIFAR10_ARCHIVE).is_file() else None


def _verify_folder(folder: Path) -> Path:
    for name, md5 in CIFAR10_BATCH_MD5.items():
        f = folder / name
        if not f.is_file():
            raise DataFileError(f"CIFAR-10 folder {folder} lacks {name}; unpack cifar-10-python.tar.gz again")
        if _md5(f) != md5:
            raise DataFileError(f"CIFAR-10 batch {f} is corrupted or truncated (md5 differs from the published "
                                f"{md5}); delete it and unpack cifar-10-python.tar.gz again")
    return folder


def cifar10_python_path(path: Optional[PathLike] = None) -> Path:
    """The CIFAR-10 python release to read (the archive or the batches folder), found and checked as described in
    the module docstring; downloads the archive when it is nowhere."""
    if path is not None:
        p = Path(path).expanduser()
        found = p if p.is_file() else (_in(p) if p.is_dir() else None)
        if found is None:
            raise DataFileError(f"no CIFAR-10 python release at {p}: give {CIFAR10_ARCHIVE}, its {CIFAR10_FOLDER} "
                                f"folder, or a folder holding either")
        return found
    roots = [r / "cifar10" for r in (data_root(), cache_dir()) if r is not None]
    for root in roots:
        found = _in(root) if root.is_dir() else None
        if found is not None:
            return _verify_folder(found) if found.is_dir() else verify(found, CIFAR10_ARCHIVE_SHA256)
    return fetch(f"cifar10/{CIFAR10_ARCHIVE}", CIFAR10_ARCHIVE_SHA256, CIFAR10_URL,
                 what=f"CIFAR-10 ({CIFAR10_ARCHIVE} or its {CIFAR10_FOLDER} folder under cifar10/)")


def _read_batches(source: Path, names: list[str]) -> dict[str, bytes]:
    if source.is_dir():
        out = {}
        for n in names:
            if not (source / n).is_file():
                raise DataFileError(f"CIFAR-10 folder {source} lacks {n}")
            out[n] = (source / n).read_bytes()
        return out
    try:
        with tarfile.open(source, "r:gz") as tf:
            members = {Path(m.name).name: m for m in tf.getmembers()
                       if m.isfile() and Path(m.name).parent.name == CIFAR10_FOLDER}
            missing = [n for n in names if n not in members]
            if missing:
                raise DataFileError(f"{source} lacks {CIFAR10_FOLDER}/{missing[0]}: not the CIFAR-10 python release")
            return {n: tf.extractfile(members[n]).read() for n in names}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataFileError(f"{source} is not a readable CIFAR-10 archive ({exc}); delete it and fetch it "
                            f"again") from exc


def _decode_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = pickle.load(io.BytesIO(blob), encoding="bytes")
        data, labels = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataFileError(f"{where} is not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataFileError(f"{where}: data of shape {data.shape} with {len(labels)} labels; expected [N, 3072] "
                            f"and N labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataFileError(f"{where}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10_python_arrays(split: str = "test", *,
                               path: Optional[PathLike] = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3, 32, 32]`` and labels ``int64 [N]`` of the official release, in its order."""
    if split not in _SPLIT_BATCHES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    source = cifar10_python_path(path)
    blobs = _read_batches(source, _SPLIT_BATCHES[split])
    parts = [_decode_batch(blobs[n], f"{source}: {n}") for n in _SPLIT_BATCHES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(split: str = "test", *, path: Optional[PathLike] = None) -> tuple[Tensor, Tensor]:
    r"""CIFAR-10 (official python release) as tensors: images ``uint8 [N, 3, 32, 32]``, labels ``int64 [N]``.

    Args:
        split (str): ``"train"`` (50,000 images) or ``"test"`` (10,000).
        path (str or PathLike, optional): ``cifar-10-python.tar.gz``, its ``cifar-10-batches-py`` folder, or a
            folder holding either; default: found under ``$SPIKEGCN_DATA/cifar10``, the cache, or downloaded.

    Convert with :func:`~spikegcn.vision.loaders.normalize` (``CIFAR_MEAN`` / ``CIFAR_STD`` for the pretrained
    ResNets).
    """
    x, y = load_cifar10_python_arrays(split, path=path)
    return torch.from_numpy(x), torch.from_numpy(y)


def load_dataset(name: str, split: str) -> tuple[Tensor, Tensor]:
    """Images (as stored: ``uint8`` for CIFAR, ``[0, 1)`` floats for MNIST) and labels of a dataset of
    :data:`DATASETS` by name; :func:`preprocess` turns a selection of the images into model inputs."""
    from .data import load_cifar10_jpg, load_mnist

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name == "mnist":
        return load_mnist(split)
    return load_cifar10(split) if name == "cifar10" else load_cifar10_jpg(split)


def preprocess(name: str, x: Tensor) -> Tensor:
    """Model inputs from images of dataset ``name``: CIFAR normalised with ``CIFAR_MEAN`` / ``CIFAR_STD`` (what
    the pretrained ResNets expect), MNIST raw ``[0, 1)`` pixels (exact in binary input coding)."""
    from .data import CIFAR_MEAN, CIFAR_STD
    from .loaders import normalize

    return x if name == "mnist" else normalize(x, CIFAR_MEAN, CIFAR_STD)
