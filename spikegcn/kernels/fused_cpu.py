r"""Fused CPU kernel for exact-mode graph aggregation with a wait time Tw < T.

The event kernel in :mod:`spikegcn.kernels.scatter` processes one input phase at a time, which on a CPU costs a
scalar scatter per (spike, synapse). This kernel walks :math:`\hat A` row by row instead, like an spmm. The
input spikes fired by phase :math:`T_w + 1` have all arrived before the first output phase, so for target node
:math:`m` they are summed densely (vectorised over features); the few late spikes (small values) are binned by
their fire phase in a per-row buffer (``(T_in + 1) x F`` floats, in L1) from per-source lists. Each neuron then
runs its prefix sums and threshold compares in place. Same spikes as the phase-by-phase path (up to float
summation order), at about the cost of one spmm plus the late spikes x fan-out.

On CPUs with AVX-512 (checked at run time) a second variant reads the input as int8 codes (sign x fire phase:
a quarter of the memory traffic of float rows) and decodes them in registers with a 32-entry permute; for each
block of 16 features the early sum and one bin per late phase stay in registers while the row's edges stream by
(a compare and a masked add per late phase, no branches, no scatters), and the block's 16 neurons then fire
from those registers (the portable kernel's float operations, lane-parallel). On a 20NG-size graph at Tw = 8 it
ran layer 1 about 2.7x faster than the portable kernel before the neurons moved into registers (5.2 s -> 1.9 s,
``benchmarks/gcn_scale.py``), which halved it again on a chunk of the ogbn-products-sized graph. CPUs with AVX2
but not AVX-512 run the same scheme 8 features at a time. Both reproduce the portable kernel's sums bit for bit
(same products, same order, no FMA; a lane left out of a sum gets +0 added, which changes no non-zero sum).
``SPIKEGCN_CPU_ISA=avx2|portable`` caps the choice (benchmarks, tests).

The C++ source is ``csrc/fused_cpu.cpp`` (package data). It is compiled once, explicitly, by :func:`build`
(``spikegcn build-kernels``; ``make install`` runs it) with :mod:`torch.utils.cpp_extension` (a C++ compiler
with OpenMP and ninja), into ``cache_dir()/kernels/spikegcn_fused_cpu-<key>/``, where the key hashes the torch
version and C++ ABI, the Python ABI, the platform, the compiler's identity, the flags and the source: two
environments never overwrite each other's build, and a changed source or torch gets a new one. :func:`load`
only imports a finished build and never compiles: until one exists (or with ``SPIKEGCN_NO_FUSED=1``) it returns
``None`` and callers use the pure-torch / torch-scatter paths, which give the same results. So no run or timing
ever includes a compile.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import torch
from torch import Tensor

_NAME = "spikegcn_fused_cpu"
SOURCE = Path(__file__).resolve().parent / "csrc" / "fused_cpu.cpp"
# codec_cpu: single-spike encoder / decoder and the CNN layers' fused firing pass; binary_codec: the binary input
# code and per-position spike counts; conv_exact, dense_exact, late_lists: exact-mode CNN and dense layers
# (kernels/conv_cpu.py)
SOURCES = (SOURCE, *(SOURCE.parent / f for f in ("codec_cpu.cpp", "binary_codec.cpp", "conv_exact.cpp",
                                                  "dense_exact.cpp", "late_lists.cpp", "aggregate_bits.cpp")))
# in the build key: a change rebuilds
HEADERS = (SOURCE.parent / "conv_tile.h", SOURCE.parent / "position_counts.h", SOURCE.parent / "huge_pages.h",
           SOURCE.parent / "fire_registers.h", SOURCE.parent / "neuron_steps.h")
CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off")
LDFLAGS = ("-fopenmp",)
log = logging.getLogger(__name__)

_lock = threading.Lock()
_module = None
_tried = False


def _compiler() -> str:
    """The C++ compiler torch's extension builder uses (``$CXX`` or ``c++``) and its version line."""
    cxx = os.environ.get("CXX", "c++")
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return f"{cxx} (not runnable)"
    return f"{shutil.which(cxx) or cxx}: {out.splitlines()[0] if out else '?'}"


def build_key() -> str:
    """16 hex digits identifying a build: torch version and C++ ABI, Python ABI, platform and machine (the
    instruction set; AVX2 / AVX-512 variants are chosen at run time), compiler, flags and the source's sha256."""
    ident = {
        "torch": torch.__version__,
        "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        "python": sys.implementation.cache_tag,
        "platform": sysconfig.get_platform(),
        "machine": platform.machine(),
        "compiler": _compiler(),
        "cflags": CFLAGS,
        "ldflags": LDFLAGS,
        "source": [hashlib.sha256(s.read_bytes()).hexdigest() for s in (*SOURCES, *HEADERS)],
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def build_dir(key: str | None = None) -> Path:
    """Folder of the build for this environment: ``cache_dir()/kernels/spikegcn_fused_cpu-<key>``."""
    from ..datafiles import cache_dir

    return cache_dir() / "kernels" / f"{_NAME}-{key or build_key()}"


def library_path(key: str | None = None) -> Path:
    """The compiled module's file (it exists once :func:`build` has run in an environment like this one)."""
    key = key or build_key()
    return build_dir(key) / f"{_NAME}_{key}.so"


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load():
    """The compiled module if it has been built for this environment, else ``None`` (never compiles; see
    :func:`build`). ``SPIKEGCN_NO_FUSED=1`` always gives ``None``."""
    global _module, _tried
    if _tried:
        return _module
    with _lock:
        if _tried:
            return _module
        _tried = True
        if os.environ.get("SPIKEGCN_NO_FUSED"):
            return None
        path = library_path()
        if not path.is_file():
            log.info("compiled CPU kernels not built for this environment (run `spikegcn build-kernels` once); "
                     "using the torch path")
            return None
        try:
            _module = _import(path)
        except ImportError as exc:  # e.g. a build for another libtorch under a colliding key: rebuild it
            log.warning("cannot load the compiled CPU kernels %s (%s); using the torch path. Rebuild them with "
                        "`spikegcn build-kernels --force`", path, exc)
            _module = None
        else:
            log.debug("compiled CPU kernels loaded from %s", path)
    return _module


def available(backend: str) -> bool:
    """Whether the compiled kernels serve a layer of this ``backend``: it is ``"auto"`` or ``"fused"`` and they are
    loaded; ``backend="fused"`` (asked for explicitly) raises when they are not, so a user who requested them never
    silently gets the torch path."""
    if backend not in ("auto", "fused"):
        return False
    ok = load() is not None
    if backend == "fused" and not ok:
        raise RuntimeError("backend='fused' requested but the fused CPU kernels are not built for this "
                           "environment; run `spikegcn build-kernels` once")
    return ok


def build(force: bool = False, verbose: bool = False) -> Path:
    """Compile ``csrc/fused_cpu.cpp`` into :func:`library_path` (about a minute) unless it is already there, and
    make :func:`load` use it. Raises ``RuntimeError`` naming the cause when it cannot be built."""
    global _module, _tried
    key = build_key()
    path, folder = library_path(key), build_dir(key)
    if path.is_file() and not force:
        log.info("compiled CPU kernels already built: %s", path)
        mod = _import(path)
    else:
        from torch.utils.cpp_extension import load as cpp_load

        folder.mkdir(parents=True, exist_ok=True)
        log.info("building the compiled CPU kernels into %s (about a minute)", folder)
        t0 = time.perf_counter()
        try:
            mod = cpp_load(name=path.stem, sources=[str(s) for s in SOURCES], extra_cflags=list(CFLAGS),
                           extra_ldflags=list(LDFLAGS), build_directory=str(folder), verbose=verbose)
        except Exception as exc:  # compiler, ninja or OpenMP missing, or a compile error
            raise RuntimeError(f"building the compiled CPU kernels failed ({type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}); spikegcn keeps "
                               f"using the torch path. Needs a C++ compiler with OpenMP and ninja") from exc
        if not path.is_file():
            raise RuntimeError(f"the kernel build finished but {path} is missing")
        log.info("built in %.0f s: %s", time.perf_counter() - t0, path)
    with _lock:
        _module, _tried = mod, True
    return path


_ISA = {"portable": 0, "avx2": 1, "avx512": 2}


def max_isa() -> str:
    """The widest kernel this CPU runs (``"avx512"``, ``"avx2"`` or ``"portable"``), capped by the environment
    variable ``SPIKEGCN_CPU_ISA`` (one of those names) when it is set."""
    mod = load()
    have = int(mod.cpu_isa()) if mod is not None else 0
    cap = os.environ.get("SPIKEGCN_CPU_ISA", "").strip().lower()
    if cap:
        if cap not in _ISA:
            raise ValueError(f"SPIKEGCN_CPU_ISA must be one of {sorted(_ISA)}, got {cap!r}")
        have = min(have, _ISA[cap])
    return next(k for k, v in _ISA.items() if v == have)


def aggregate_exact(adj: Tensor, inp, bias: Tensor | None, scale: Tensor, thresholds: Tensor, T_in: int, Tw: int,
                    signed: bool, kernel: str = "auto") -> tuple[Tensor, Tensor | None]:
    """Fire phases of the aggregation neurons ``A-hat x`` for input spikes ``inp`` (a 2-D
    :class:`~spikegcn.spikes.PhaseSpikes`; see the module docstring); CPU float32 only.

    ``kernel``: ``"auto"`` picks the widest int8-code kernel the CPU has (:func:`max_isa`) when the input code has
    ``T <= 31`` and int8 phases, else the portable float kernel; ``"avx512"``, ``"avx2"`` or ``"portable"``
    force one (an error where it cannot run). All give the same spikes bit for bit.
    """
    if kernel not in ("auto", *_ISA):
        raise ValueError(f"kernel must be 'auto' or one of {sorted(_ISA)}, got {kernel!r}")
    mod = load()
    if mod is None:
        raise RuntimeError("fused CPU kernel is not available")
    phase = inp.phase
    if phase.dim() != 2:
        raise ValueError(f"aggregate_exact needs 2-D input spikes [nodes, features], got shape {tuple(phase.shape)}")
    N, F = phase.shape
    if adj.dim() != 2 or adj.shape[1] != N:
        raise ValueError(f"adjacency of shape {tuple(adj.shape)} does not match {N} input nodes")
    if int(T_in) != inp.code.T:
        raise ValueError(f"T_in = {T_in} differs from the input code's T = {inp.code.T}")
    if int(Tw) < 0:
        raise ValueError(f"Tw must be >= 0, got {Tw}")
    if bias is not None and bias.numel() != F:
        raise ValueError(f"bias has {bias.numel()} entries, expected {F} (one per feature)")
    if phase.numel():
        lo, hi = (int(v) for v in torch.aminmax(phase))
        if lo < 0 or hi > T_in:
            raise ValueError(f"input fire phases must lie in 0..{T_in}, got {lo}..{hi}")
    inv = (1.0 / scale.to(torch.float32).expand(F)).contiguous()
    b = bias.to(torch.float32).contiguous() if bias is not None else torch.empty(0, device=phase.device)
    thr = thresholds.to(torch.float32).contiguous()
    codes_ok = T_in <= 31 and phase.dtype == torch.int8
    if kernel == "auto":
        kernel = max_isa() if codes_ok else "portable"
    elif kernel != "portable":
        if not codes_ok:
            raise RuntimeError(f"the {kernel} int8-code kernel needs int8 phases and an input code with T <= 31")
        if _ISA[kernel] > int(mod.cpu_isa()):
            raise RuntimeError(f"this CPU cannot run the {kernel} kernel")
    if kernel != "portable":
        codes = phase if inp.sign is None else phase * inp.sign.to(torch.int8)
        in_scale = inp.scale.to(torch.float32).reshape(-1).expand(F).contiguous()
        ph, sg = mod.aggregate_codes(adj.crow_indices(), adj.col_indices(),
                                     adj.values().to(torch.float32).contiguous(), codes.contiguous(), in_scale,
                                     inp.code.values(torch.float32).contiguous(), b, inv, thr, int(T_in), int(Tw),
                                     bool(signed), _ISA[kernel])
        return ph, (sg if signed else None)
    if F > 32767:
        raise ValueError(f"the portable fused kernel supports at most 32767 features, got {F}")
    x = inp.values(torch.float32)
    k0 = min(Tw + 1, T_in)
    late = phase > k0
    xe = torch.where(late, torch.zeros((), dtype=x.dtype, device=x.device), x).contiguous()
    rows, feats = late.nonzero(as_tuple=True)  # row-major: already grouped by source node
    late_ptr = torch.zeros(N + 1, dtype=torch.int64, device=phase.device)
    late_ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=N), 0)
    ph, sg = mod.aggregate_exact(adj.crow_indices(), adj.col_indices(), adj.values().to(torch.float32).contiguous(),
                                 xe, late_ptr, feats.to(torch.int16), phase[rows, feats].to(torch.int8),
                                 x[rows, feats].contiguous(), b, inv, thr, int(T_in), int(Tw), bool(signed))
    return ph, (sg if signed else None)


def aggregate_bins(adj: Tensor, inp, k0: int) -> Tensor | None:
    """Late-phase bins of ``A-hat x`` for one-spike input ``inp`` (a 2-D :class:`~spikegcn.spikes.PhaseSpikes` with
    int8 phases, ``T <= 31``): ``[rows of adj, T - k0, features]`` float32, bin ``q`` the sum over each row's edges of
    the values fired at phase ``k0 + 1 + q``. ``None`` where the int8-code kernels cannot run (no kernel, no AVX2,
    another input or dtype): the caller then aggregates phase by phase."""
    mod = load()
    phase, T_in = inp.phase, inp.code.T
    if (mod is None or max_isa() == "portable" or phase.dim() != 2 or phase.dtype != torch.int8 or T_in > 31
            or not 0 <= k0 < T_in or adj.dtype != torch.float32 or adj.layout != torch.sparse_csr
            or phase.device.type != "cpu" or adj.shape[1] != phase.shape[0]):
        return None
    F = phase.shape[1]
    codes = phase if inp.sign is None else phase * inp.sign.to(torch.int8)
    scale = inp.scale.to(torch.float32).reshape(-1).expand(F).contiguous()
    return mod.aggregate_bins(adj.crow_indices(), adj.col_indices(), adj.values().contiguous(), codes.contiguous(),
                              scale, inp.code.values(torch.float32).contiguous(), int(T_in), int(k0),
                              _ISA[max_isa()])


def aggregate_bins_bits(adj: Tensor, inp, k0: int) -> Tensor | None:
    """:func:`aggregate_bins` for binary multi-spike input (a 2-D :class:`~spikegcn.spikes.BinarySpikes`, int32
    codes, ``T <= 24``, per-feature or scalar lambda): ``[rows of adj, T - k0, features]``, bin ``q`` the event
    path's sum (``torch.sparse.mm`` of the values sent at phase ``k0 + 1 + q``) bit for bit. ``None`` where the
    kernel cannot run (no kernel or AVX-512, another input, more than 12 late phases)."""
    mod = load()
    bits = inp.bits
    if (mod is None or not hasattr(mod, "aggregate_bins_bits") or bits.dim() != 2 or bits.dtype != torch.int32
            or bits.device.type != "cpu" or adj.dtype != torch.float32 or adj.layout != torch.sparse_csr
            or adj.shape[1] != bits.shape[0] or max_isa() != "avx512" or not mod.aggregate_bits_supported(inp.T, k0)):
        return None
    F = bits.shape[1]
    scale = inp.scale.to(torch.float32)
    if scale.numel() not in (1, F) or not bool((scale.abs() >= 2.0**-100).all()):  # lambda x 2^-T stays exact
        return None
    sign = inp.sign.contiguous() if inp.sign is not None else bits.new_empty(0, dtype=torch.int8)
    return mod.aggregate_bins_bits(adj.crow_indices(), adj.col_indices(), adj.values().contiguous(),
                                   bits.contiguous(), sign, scale.reshape(-1).expand(F).contiguous(), int(inp.T),
                                   int(k0))


def encode_phase(x: Tensor, thresholds_asc: Tensor, signed: bool
                 ) -> tuple[Tensor, Tensor | None, int, int, int] | None:
    """One-pass CPU encoder for float32 tensors with T <= 127: ``(phase, sign, non-finite count, saturated count,
    fired count)`` (saturated: ``|a| > 1``, clipped to phase 1), or ``None`` when the kernel is unavailable."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or thresholds_asc.numel() > 127:
        return None
    mod = _module if _tried else load()
    if mod is None:
        return None
    ph, sg, counts = mod.encode_phase(x.contiguous(), thresholds_asc.contiguous(), bool(signed))
    bad, sat, fired = counts.tolist()
    return ph, (sg if signed else None), bad, sat, fired


def encode_binary(x: Tensor, T: int, signed: bool) -> tuple[Tensor, Tensor | None, int, int, int] | None:
    """One-pass CPU binary encoder (:func:`spikegcn.coding.encode_binary`) for float32 tensors: ``(bits, sign,
    non-finite count, negative count, saturated count)`` (saturated: ``|x| > 1``; the codes and signs contiguous,
    whatever the layout of ``x``), or ``None`` when the kernel is unavailable. The caller refuses the codes when the
    counts say so."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or T != int(T) or not 1 <= T <= 62:
        return None
    mod = _module if _tried else load()
    if mod is None or not hasattr(mod, "encode_binary"):
        return None
    bits, sg, counts = mod.encode_binary(x.contiguous(), int(T), bool(signed))
    bad, neg, sat = counts.tolist()
    return bits, (sg if signed else None), bad, neg, sat


def decode_binary(bits: Tensor, T: int, sign: Tensor | None) -> Tensor | None:
    """One-pass CPU decoder of binary codes to float32 (:func:`spikegcn.coding.decode_binary`), or ``None`` when
    the kernel is unavailable or the tensors are not CPU int32 / int64 codes and an int8 sign of their shape."""
    if bits.device.type != "cpu" or bits.dtype not in (torch.int32, torch.int64) or T != int(T) or not 1 <= T <= 62:
        return None
    if sign is not None and (sign.dtype != torch.int8 or sign.shape != bits.shape or sign.device.type != "cpu"):
        return None
    mod = _module if _tried else load()
    if mod is None or not hasattr(mod, "decode_binary"):
        return None
    return mod.decode_binary(bits.contiguous(), int(T), bits.new_empty(0, dtype=torch.int8) if sign is None
                             else sign.contiguous())


def encode_join(z: Tensor, thresholds_asc: Tensor, signed: bool, bias: Tensor | None = None,
                shortcut: tuple[Tensor, Tensor, int, tuple[int, int]] | None = None, table: Tensor | None = None,
                count_positions: bool = False) -> tuple[Tensor, Tensor | None, int, int, int, Tensor | None] | None:
    """Closed-form firing fused after a convolution, in one compiled pass: ``z`` (the convolution's float32
    ``[N, C, ...]`` output) plus an optional diagonal ``shortcut = (values [N, Cin, H, W], weight [C], pad_front,
    (sh, sw))`` (output channel ``c`` adds ``values[:, c - pad_front, ::sh, ::sw] * weight[c]``) plus an optional
    per-channel ``bias``, summed in that order as the torch path sums them, then encoded as :func:`encode_phase`.
    With a value ``table`` the pass also overwrites ``z`` with the output's decoded values (``sign x table[phase]``,
    the next layer's input). With ``count_positions`` the pass also counts the output's spikes per position (int64
    ``z.shape[2:]``, summed over ``N`` and ``C``: :func:`count_per_position` of the phases).
    ``(phase, sign, non-finite count, saturated count, fired count, counts or None)``, or ``None`` when
    the kernel is unavailable or the tensors are not CPU float32, contiguous, with T <= 31 (the caller takes the
    torch path); a shortcut whose channels or subsampled positions do not match ``z`` raises."""
    if z.device.type != "cpu" or z.dtype != torch.float32 or not z.is_contiguous() or z.dim() < 2:
        return None
    if thresholds_asc.numel() > 127 or (table is not None and table.numel() > 32):
        return None
    parts = [t for t in (bias, table, thresholds_asc) if t is not None]
    if shortcut is not None:
        parts += list(shortcut[:2])
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in parts):
        return None
    mod = _module if _tried else load()
    if mod is None or not hasattr(mod, "encode_join"):
        return None
    none = z.new_empty(0)
    sv, sw, front, (sh, sww) = shortcut if shortcut is not None else (none, none, 0, (1, 1))
    per_pos = bool(count_positions) and z.dim() >= 3
    ph, sg, counts, at = mod.encode_join(z, none if bias is None else bias.contiguous(), sv.contiguous(),
                                         sw.contiguous(), int(front), int(sh), int(sww), thresholds_asc.contiguous(),
                                         bool(signed), none if table is None else table.contiguous(), per_pos)
    bad, sat, fired = counts.tolist()
    return ph, (sg if signed else None), bad, sat, fired, (at.view(z.shape[2:]) if per_pos else None)


_HUGE_MIN = 8 << 20  # bytes: smaller tensors stay as they are (the kernel's helper advises none either)


def empty(shape: tuple[int, ...] | list[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.empty`` for a large buffer that is written next: on the CPU its pages are advised as transparent
    huge pages first (the compiled ``advise_huge_pages``), so that writing a fresh 30 MB block of bins or a matrix
    product costs a few faults instead of thousands (torch maps every large tensor anew). Elsewhere, or without the
    compiled module, plain ``torch.empty``."""
    t = torch.empty(shape, dtype=dtype, device=device)
    if t.device.type == "cpu" and t.numel() * t.element_size() >= _HUGE_MIN:
        mod = _module if _tried else load()
        if mod is not None and hasattr(mod, "advise_huge_pages"):
            mod.advise_huge_pages(t)
    return t


def index_rows(x: Tensor, ids: Tensor) -> Tensor:
    """``x[ids]`` for a 1-D index tensor, gathered into a fresh :func:`empty` buffer (huge pages when large)."""
    return torch.index_select(x, 0, ids, out=empty((ids.numel(), *x.shape[1:]), x.dtype, x.device))


def count_per_position(x: Tensor) -> Tensor | None:
    """Spikes of ``[N, C, *positions]`` spike data per position (summed over ``N`` and ``C``) as int64, in one
    compiled pass: the non-zeros of int8 fire phases, or the set bits of int32 / int64 binary codes; ``None`` when
    the kernel is unavailable (the caller counts with torch)."""
    if x.device.type != "cpu" or x.dtype not in (torch.int8, torch.int32, torch.int64) or x.dim() < 3:
        return None
    mod = _module if _tried else load()
    if mod is None or not hasattr(mod, "count_per_position"):
        return None
    rows, positions = x.shape[0] * x.shape[1], math.prod(x.shape[2:])
    return mod.count_per_position(x.contiguous().view(rows, positions)).view(x.shape[2:])


def decode_phase(phase: Tensor, table: Tensor, sign: Tensor | None, scale: Tensor) -> Tensor | None:
    """One-pass CPU decoder to float32 (``sign * scale[channel] * table[phase]``); ``None`` if unavailable. The same
    pass finds the largest phase: one past the table (``0..T`` for T + 1 entries), or negative, raises the torch
    path's error (``spikegcn.coding._check_phases``) instead of returning values."""
    if phase.device.type != "cpu" or phase.dtype != torch.int8 or table.dtype != torch.float32:
        return None
    last = phase.shape[-1] if phase.dim() else 1
    # the kernel scales along the last axis: only a scalar or a [last] scale fits (a [C, 1, 1] channel scale of
    # an NCHW map with C == W would be misapplied; the caller's torch path broadcasts it correctly)
    per_last = scale.dim() >= 1 and scale.shape[-1] == last and scale.numel() == last
    if scale.numel() != 1 and not per_last:
        return None
    mod = _module if _tried else load()
    if mod is None:
        return None
    s = sign.contiguous() if sign is not None else torch.empty(0, dtype=torch.int8, device=phase.device)
    out, top = mod.decode_phase(phase.contiguous(), s, table.contiguous(),
                                scale.to(torch.float32).reshape(-1).contiguous())
    if top >= table.numel():  # as an unsigned byte: a negative phase counts as >= 128
        from ..coding import _check_phases

        _check_phases(phase, table.numel() - 1)  # raises, naming the phases found
        raise ValueError(f"decode: fire phases outside 0..{table.numel() - 1}")
    return out
