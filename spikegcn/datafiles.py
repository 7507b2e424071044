"""Locating, verifying and downloading the data files the pipelines read.

Resolution order for a file ``rel`` of a dataset (e.g. ``textgcn/data/R8.txt``):

1. ``$SPIKEGCN_DATA/rel`` (the Makefile sets it to a ``datasets`` folder shipped beside the checkout, when there is
   one);
2. ``cache_dir()/rel`` (``$SPIKEGCN_CACHE`` or ``~/.cache/spikegcn``), filled by :func:`fetch` from the
   dataset's public release when it is missing and a URL is known.

Every file is checked against a sha256 recorded in the project's ``datasets/`` recipes, so a truncated or
corrupted copy raises :class:`DataFileError` instead of silently producing a wrong graph or image set.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["DataFileError", "data_root", "cache_dir", "sha256_file", "verify", "fetch", "read_sums"]

_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, so a file is hashed once


class DataFileError(RuntimeError):
    """A data file is missing, corrupted or cannot be downloaded."""


def data_root() -> Path | None:
    """``$SPIKEGCN_DATA`` as a path, or ``None`` when unset."""
    root = os.environ.get("SPIKEGCN_DATA")
    return Path(root).expanduser() if root else None


def cache_dir() -> Path:
    """Download cache: ``$SPIKEGCN_CACHE`` or ``~/.cache/spikegcn``."""
    return Path(os.environ.get("SPIKEGCN_CACHE", Path.home() / ".cache" / "spikegcn")).expanduser()


def sha256_file(path: str | os.PathLike) -> str:
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


def read_sums(path: str | os.PathLike) -> dict[str, str]:
    """Parse a ``sha256sum``-style file into ``{relative path: digest}``."""
    sums = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest.lower()
    return sums


def verify(path: str | os.PathLike, sha256: str) -> Path:
    """Return ``path`` if its sha256 matches, else raise :class:`DataFileError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"data file {path} does not exist")
    got = sha256_file(path)
    if got != sha256.lower():
        raise DataFileError(
            f"data file {path} is corrupted or truncated: sha256 {got} != expected {sha256} "
            f"(size {path.stat().st_size} bytes); delete it and fetch it again"
        )
    return path


def fetch(rel: str, sha256: str, url: str | None = None, *, what: str = "dataset") -> Path:
    """Locate ``rel`` under ``$SPIKEGCN_DATA`` or the cache, downloading it into the cache if needed.

    Raises :class:`DataFileError` with instructions when the file is nowhere and cannot be downloaded.
    """
    candidates = []
    root = data_root()
    if root is not None:
        candidates.append(root / rel)
    candidates.append(cache_dir() / rel)
    for cand in candidates:
        if cand.is_file():
            return verify(cand, sha256)
    dest = cache_dir() / rel
    if url is None:
        raise DataFileError(_missing_msg(rel, candidates, what, reason="no public download address is known"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, tempfile.NamedTemporaryFile(
            dir=dest.parent, delete=False
        ) as tmp:
            shutil.copyfileobj(resp, tmp)
            tmp_path = Path(tmp.name)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataFileError(_missing_msg(rel, candidates, what, reason=f"download from {url} failed ({exc})")) from exc
    try:
        verify(tmp_path, sha256)
    except DataFileError:
        tmp_path.unlink(missing_ok=True)
        raise DataFileError(f"downloaded {url} does not match sha256 {sha256}; refusing to use it") from None
    tmp_path.replace(dest)
    return dest


def _missing_msg(rel: str, candidates: list[Path], what: str, reason: str) -> str:
    looked = ", ".join(str(c) for c in candidates)
    return (
        f"{what} file '{rel}' not found (looked in: {looked}) and {reason}. "
        f"Put the file at one of those paths, or set SPIKEGCN_DATA to a folder holding '{rel}'."
    )
