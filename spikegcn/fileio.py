"""Writing files atomically, locking them between processes, and loading caches that may be corrupt.

Every file the project writes goes through :func:`atomic_open` (or a helper built on it): the bytes go to a
temporary file in the target's folder, are flushed and ``fsync``-ed, and the temporary file is renamed over the
target with :func:`os.replace`. A concurrent reader sees either the old or the new file, never half of one, and an
interrupted write leaves the old file intact. :func:`file_lock` serialises read-modify-write cycles of several
processes on one file (``fcntl.flock`` on a hidden ``.<name>.lock`` beside it), so that concurrent sweeps merge
their points instead of overwriting each other's.

Caches are loaded with :func:`load_cached`: a file that cannot be read is named in a warning and removed, and the
caller rebuilds it. :func:`load_torch` reads user-supplied checkpoints with ``weights_only=True`` and turns every
failure into a :class:`CorruptFileError` that names the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

__all__ = ["CorruptFileError", "atomic_open", "write_text", "write_bytes", "write_json", "torch_save",
           "savefig", "file_lock", "load_torch", "load_json", "load_cached"]

T = TypeVar("T")


class CorruptFileError(ValueError):
    """A file exists but cannot be read as what it should be (truncated, overwritten, not the right format)."""


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new ``.<name>.<random>.tmp`` in ``folder``, opened for writing with the mode a plain ``open()`` gives
    (0666 less the umask, applied by the kernel: reading the umask would mean setting it, racing other threads)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{os.urandom(6).hex()}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name for {folder / name}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path`` atomically.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes). Parent folders are created. On an exception the temporary
    file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        f: IO
        with (os.fdopen(fd, "w", encoding=encoding, newline=newline) if mode == "w" else os.fdopen(fd, "wb")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible on every filesystem)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", newline: str | None = None) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding=encoding, newline=newline) as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1, **kw) -> Path:
    """Serialise ``obj`` first (a non-serialisable object leaves ``path`` untouched), then write it atomically."""
    return write_text(path, json.dumps(obj, indent=indent, **kw))


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """:func:`torch.save` to ``path`` atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def savefig(fig, path: str | os.PathLike, **kw) -> Path:
    """``fig.savefig`` to ``path`` atomically (the format comes from the suffix)."""
    path = Path(path)
    kw.setdefault("format", path.suffix.lstrip(".") or None)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, **kw)
    return path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive inter-process lock for read-modify-write cycles on ``path`` (blocks until it is free).

    The lock is held on ``.<name>.lock`` beside ``path`` (the target itself is replaced by every atomic write,
    so it cannot carry the lock). The lock file stays; it is empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# torch.load's failure modes on a damaged file; an unpickling error also covers a file that is not a plain
# checkpoint (weights_only=True refuses code objects), which we report without suggesting weights_only=False
_TORCH_ERRORS = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
                 AttributeError, KeyError, IndexError, TypeError, UnicodeDecodeError)


def load_torch(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; a damaged file raises
    :class:`CorruptFileError` naming it (``FileNotFoundError`` when it does not exist)."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _TORCH_ERRORS as exc:
        if not zipfile.is_zipfile(path):
            reason = "not a torch zip archive: truncated or overwritten"
        elif isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
            reason = "it holds Python objects beyond tensors and plain containers, which are not loaded"
        else:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CorruptFileError(f"{what} {path} cannot be loaded ({path.stat().st_size} bytes; {reason}); "
                               f"recreate it or pass another file") from None


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """``json.load`` of ``path``; invalid JSON raises :class:`CorruptFileError` naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{what} {path} is not valid JSON ({exc}); move it away or recreate it") from None


def load_cached(path: str | os.PathLike, load: Callable[[Path], T], what: str = "cache entry") -> T | None:
    """Load a cache file with ``load(path)``: ``None`` when it is absent, or when it is corrupt, in which case a
    warning names the file and it is removed so that the caller rebuilds it.

    ``load`` signals corruption by raising :class:`CorruptFileError` (as :func:`load_torch` and
    :func:`load_json` do), ``KeyError`` or ``ValueError`` (a readable file with the wrong content).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load(path)
    except (CorruptFileError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        warnings.warn(f"corrupt {what} {path} removed: {(str(exc).splitlines() or [type(exc).__name__])[0][:300]}",
                      stacklevel=2)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
