"""Standard graph benchmarks: Planetoid citation graphs and TU graph-classification sets, and their splits.

PyG's :class:`~torch_geometric.datasets.Planetoid` and :class:`~torch_geometric.datasets.TUDataset` read raw
files from ``<root>/<name>/raw/`` and download them when they are missing. This module fills that folder from a
local copy of the raw files when there is one, checked against the ``SHA256SUMS`` beside it:

* ``$SPIKEGCN_DATA/planetoid/ind.<name>.*`` (e.g. ``ind.cora.x``) for Planetoid,
* ``$SPIKEGCN_DATA/tudataset/<NAME>/<NAME>_*.txt`` for TU datasets,

linked (or copied, where links are not possible) into ``root`` = ``$SPIKEGCN_CACHE/graphs`` (default
``~/.cache/spikegcn/graphs``), never into the source tree. Without a local copy PyG downloads the files itself;
offline, the loaders fail at once with one line that says where they looked and what to set.

Splits: :func:`sgnnbench_split` (SGNNBench's random class split of a citation graph) and :func:`kfold_splits`
(stratified k-fold cross-validation with an inner validation hold-out for graph classification).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import Tensor

from .datafiles import DataFileError, cache_dir, data_root, read_sums, verify

__all__ = ["graph_root", "stage_raw", "load_planetoid", "load_tudataset", "sgnnbench_split", "kfold_splits",
           "DataFileError"]

_PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def graph_root(root: str | os.PathLike | None = None) -> Path:
    """Folder holding ``<name>/raw`` and ``<name>/processed`` per dataset: ``root`` or the cache's ``graphs``."""
    return Path(root).expanduser() if root is not None else cache_dir() / "graphs"


def _local_source(kind: str, name: str) -> tuple[Path, list[str]] | None:
    """Folder of the local raw copy under ``$SPIKEGCN_DATA`` and the file names PyG needs, or ``None``."""
    base = data_root()
    if base is None:
        return None
    if kind == "planetoid":
        src = base / "planetoid"
        files = [f"ind.{name.lower()}.{p}" for p in _PLANETOID_PARTS]
        return (src, files) if (src / files[0]).exists() else None
    src = base / "tudataset" / name
    if not (src / f"{name}_A.txt").exists():
        return None
    sums = src / "SHA256SUMS"
    if not sums.is_file():
        raise DataFileError(f"{src} has no SHA256SUMS to verify the {name} raw files against")
    return src, sorted(f for f in read_sums(sums) if f.startswith(f"{name}_") and f.endswith(".txt"))


def stage_raw(kind: str, name: str, root: str | os.PathLike | None = None) -> Path | None:
    """Verify the local raw files of dataset ``name`` and lay them out as ``<root>/<name>/raw/``.

    Args:
        kind: ``"planetoid"`` or ``"tudataset"``.
        name: dataset name as PyG spells it (``"Cora"``, ``"MUTAG"``, ``"PROTEINS"``).
        root: dataset root (default :func:`graph_root`).

    Returns:
        the raw folder, or ``None`` when ``$SPIKEGCN_DATA`` holds no copy (PyG will download).

    Raises:
        DataFileError: a local file is missing from ``SHA256SUMS`` or does not match it.
    """
    if kind not in ("planetoid", "tudataset"):
        raise ValueError(f"kind must be 'planetoid' or 'tudataset', got {kind!r}")
    found = _local_source(kind, name)
    if found is None:
        return None
    src, files = found
    sums = read_sums(src / "SHA256SUMS") if (src / "SHA256SUMS").is_file() else {}
    raw = graph_root(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f not in sums:
            raise DataFileError(f"{src / 'SHA256SUMS'} lists no checksum for {f}; cannot verify the {name} raw files")
        verify(src / f, sums[f])
        dest = raw / f
        if dest.is_symlink() and dest.resolve() == (src / f).resolve():
            continue
        if dest.is_file() and not dest.is_symlink():
            try:
                verify(dest, sums[f])
                continue
            except DataFileError:
                pass  # an old or damaged copy: replaced by the verified one below
        _link_or_copy(src / f, dest)
    return raw


def _link_or_copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(src.resolve())
    except OSError:  # no symlinks on this file system
        shutil.copyfile(src, tmp)
    tmp.replace(dest)


def _open(kind: str, name: str, root: Path, download: bool, factory):
    """Stage the local copy, then build the PyG dataset, turning a failed download into one clear line."""
    raw = stage_raw(kind, name, root)
    base = data_root()
    where = f"{base if base is not None else '$SPIKEGCN_DATA (unset)'}/" + \
        ("planetoid" if kind == "planetoid" else f"tudataset/{name}")
    have_raw = raw is not None or _has_raw(kind, name, root)
    if not have_raw and not download:
        raise DataFileError(f"{name}: no raw files under {where} nor {root / name / 'raw'}, and download=False; "
                            f"set SPIKEGCN_DATA to a folder holding them or allow the download")
    if have_raw:
        return factory()
    try:  # PyG downloads the raw files first; any failure there is reported in one line
        return factory()
    except Exception as exc:  # noqa: BLE001 - urllib, fsspec and aiohttp each raise their own error types
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise DataFileError(f"{name}: no raw files under {where} and PyG's download failed ({reason}); set "
                            f"SPIKEGCN_DATA to a folder holding them or connect to the internet") from None


def _has_raw(kind: str, name: str, root: Path) -> bool:
    raw = root / name / "raw"
    if kind == "planetoid":
        return all((raw / f"ind.{name.lower()}.{p}").is_file() for p in _PLANETOID_PARTS)
    return (raw / f"{name}_A.txt").is_file() and (raw / f"{name}_graph_indicator.txt").is_file()


def load_planetoid(name: str = "Cora", root: str | os.PathLike | None = None, transform=None,
                   download: bool = True):
    """``torch_geometric.datasets.Planetoid(root, name)`` fed from ``$SPIKEGCN_DATA`` when it holds the files.

    ``transform`` is passed on (e.g. ``NormalizeFeatures()``); the public split is in the masks.
    """
    from torch_geometric.datasets import Planetoid

    root = graph_root(root)
    return _open("planetoid", name, root, download, lambda: Planetoid(str(root), name, transform=transform))


def load_tudataset(name: str, root: str | os.PathLike | None = None, transform=None, download: bool = True,
                   use_node_attr: bool = False):
    """``torch_geometric.datasets.TUDataset(root, name)`` fed from ``$SPIKEGCN_DATA`` when it holds the files."""
    from torch_geometric.datasets import TUDataset

    root = graph_root(root)
    return _open("tudataset", name, root, download,
                 lambda: TUDataset(str(root), name, transform=transform, use_node_attr=use_node_attr))


def sgnnbench_split(y: Tensor, seed: int, per_class: int = 20, num_val: int = 500,
                    num_test: int = 1000) -> tuple[Tensor, Tensor, Tensor]:
    """SGNNBench's random class split: ``per_class`` labelled nodes per class, ``num_val`` validation, ``num_test``
    test nodes, drawn with seed ``seed``.

    Follows the procedure of ``class_rand_splits`` in SGNNBench's ``dataset.py`` (Zhhuizhe/SGNNBench), which
    draws from the global torch generator right after ``seed_everything(seed)`` (its run ``r`` uses seed
    ``123 + r``): for each class in ascending label order, shuffle that class's nodes; the first ``per_class``
    are labelled, the rest join a pool in that order; shuffle the pool once; its first ``num_val`` nodes are
    the validation set and the next ``num_test`` the test set. A private CPU generator with the same seed
    draws the same permutations without touching the global one.

    Returns:
        ``(train, val, test)`` index tensors (int64, on ``y``'s device).
    """
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"y must be a 1-D tensor of integer class labels, got shape {tuple(y.shape)} {y.dtype}")
    gen = torch.Generator().manual_seed(int(seed))
    labels = y.cpu()
    idx = torch.arange(labels.numel())
    train, pool = [], []
    for c in labels.unique():
        members = idx[labels == c]
        if members.numel() < per_class:
            raise ValueError(f"class {int(c)} has {members.numel()} nodes, fewer than per_class={per_class}")
        members = members[torch.randperm(members.numel(), generator=gen)]
        train.append(members[:per_class])
        pool.append(members[per_class:])
    pool_t = torch.cat(pool)
    if pool_t.numel() < num_val + num_test:
        raise ValueError(f"only {pool_t.numel()} unlabelled nodes for num_val + num_test = {num_val + num_test}")
    pool_t = pool_t[torch.randperm(pool_t.numel(), generator=gen)]
    out = (torch.cat(train), pool_t[:num_val], pool_t[num_val:num_val + num_test])
    return tuple(t.to(y.device) for t in out)


def kfold_splits(y: Tensor, folds: int = 10, seed: int = 0,
                 val_fraction: float = 0.1) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Stratified ``folds``-fold cross-validation of graph labels ``y`` with an inner validation hold-out.

    Each fold is one test part; of the rest a stratified ``val_fraction`` is held out for model selection (the
    protocol of Errica et al., "A Fair Comparison of Graph Neural Networks for Graph Classification", ICLR 2020),
    so no test graph ever chooses an epoch.

    Returns:
        per fold ``(train, val, test)`` index tensors; the test parts partition ``range(len(y))``.
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    labels = y.cpu().numpy()
    out = []
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for rest, test in skf.split(labels, labels):
        train, val = train_test_split(rest, test_size=val_fraction, random_state=seed, stratify=labels[rest])
        out.append(tuple(torch.as_tensor(a, dtype=torch.long) for a in (sorted(train), sorted(val), test)))
    return out
