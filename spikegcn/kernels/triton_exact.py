r"""Triton kernel for exact-mode graph aggregation with a wait time Tw < T (CUDA; the CPU twin is
:mod:`spikegcn.kernels.fused_cpu`).

Same algorithm as the fused CPU kernel: :math:`\hat A` is walked row by row like an spmm. For target node
:math:`m` the input spikes fired by phase :math:`k_0 = T_w + 1` have all arrived before the first output phase,
so they are summed densely (bin 0); every later input phase :math:`k_0 + r \le T_{in}` is summed into its own bin
:math:`r`. Output phase :math:`t` sees the input up to phase :math:`t + T_w`, i.e. the prefix sum of bins
:math:`0..\min(t-1, n_{late})`; the neuron fires at the first crossing of the shifted thresholds
:func:`~spikegcn.coding.PhaseCode.thresholds` (signed neurons on :math:`|P|`, carrying the sign of :math:`P`), as
:func:`spikegcn.neuron.one_spike_fire` does. After the last late bin the potential is final, so the first
crossing there is the later of :math:`n_{late} + 1` and its round-off phase.

One program handles one row and a block of features. The input is read as int8 codes (sign x fire phase, a
quarter of a float row's memory traffic) and decoded in registers from the ``[T_in + 1]`` value table; ``BLOCK_E``
of the row's edges are gathered at a time (``BLOCK_E x BLOCK_F`` codes) into a ``[bins, BLOCK_E, BLOCK_F]`` tile
of per-lane partial sums in registers, reduced once after the row. No host synchronisation and no per-phase pass:
one launch per layer, where the per-phase event path needs a ``nonzero`` (a host sync) and a scatter for every
late phase.

Sums are taken per lane and then reduced (and the prefix over bins by a scan), so they may differ from the CPU
kernel's sequential sums in the last bit; with dyadic values every order is exact and the spikes are equal (the
tests use that). Floating point contraction (FMA) is switched off, as in the CPU build.

Triton is optional (``pip install spikegcn[gpu]``). :func:`available` says whether it can run on a device: CUDA
tensors need Triton and a GPU; CPU tensors run only under Triton's interpreter (``TRITON_INTERPRET=1``), which the
tests use.
"""
from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

__all__ = ["available", "aggregate_exact"]

# Codes are int8 (sign x phase): input codes up to T = 127.
MAX_T = 127


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _import_triton():
    # imported with TRITON_INTERPRET unset: Triton's standard library (the reduction combine functions used below)
    # is then made of compiled-mode jit functions, which the GPU compiler and the interpreter (it runs their Python
    # body) both accept, whichever mode each kernel is built in later
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None, None
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
    return triton, tl


triton, tl = _import_triton()
if tl is not None:  # the reductions' combine functions (the ones tl.sum and tl.min use)
    _sum, _min = tl.standard._sum_combine, tl.standard._elementwise_min


def available(device: torch.device | str) -> bool:
    """Whether the kernel can run on tensors of ``device`` here (Triton installed; CUDA, or CPU under
    ``TRITON_INTERPRET=1``)."""
    if triton is None:
        return False
    dev = torch.device(device)
    if dev.type == "cuda":
        return not _interpret() and torch.cuda.is_available()
    return dev.type == "cpu" and _interpret()


@functools.lru_cache(maxsize=2)
def _kernel(interpret: bool):
    """The jitted kernel, built on first use (Triton reads ``TRITON_INTERPRET`` when a kernel is decorated); on a
    GPU autotuned over the edge block and warps (the first call of a shape times the candidates).

    Only builtins are called (tl.reduce/associative_scan with the standard combine functions, not tl.sum/min/
    cumsum/zeros): calling a compiled-mode jit function from an interpreted kernel fails."""

    @triton.jit
    def exact_rows(crow_ptr, col_ptr, val_ptr, codes_ptr, table_ptr, in_scale_ptr, bias_ptr, inv_scale_ptr,
                   thr_ptr, out_phase_ptr, out_sign_ptr, F, T, k0, nl,
                   NB: tl.constexpr, HAS_BIAS: tl.constexpr, SIGNED: tl.constexpr,  # type: ignore[name-defined]
                   BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr, IDX: tl.constexpr):  # type: ignore[name-defined]
        # IDX: the integer type of phase arithmetic (int32 on a GPU; int64 in the interpreter, which checks every
        # narrower integer operation for overflow at a high cost)
        m = tl.program_id(0)
        f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
        fmask = f < F
        e0 = tl.load(crow_ptr + m).to(tl.int64)
        e1 = tl.load(crow_ptr + m + 1).to(tl.int64)
        sc = tl.load(in_scale_ptr + f, mask=fmask, other=0.0)
        r = tl.arange(0, NB).to(IDX)
        # bin 0: the early inputs (phase <= k0); bin r > 0: input phase k0 + r. Per-lane partial sums, reduced once
        # after the edge loop (no reduction inside it).
        bins = tl.full([NB, BLOCK_E, BLOCK_F], 0, sc.dtype)
        for e in range(e0, e1, BLOCK_E):
            ei = e + tl.arange(0, BLOCK_E)
            emask = ei < e1
            n = tl.load(col_ptr + ei, mask=emask, other=0).to(tl.int64)
            w = tl.load(val_ptr + ei, mask=emask, other=0.0)
            c = tl.load(codes_ptr + n[:, None] * F + f[None, :], mask=emask[:, None] & fmask[None, :],
                        other=0).to(IDX)
            a = tl.abs(c)
            v = tl.load(table_ptr + a) * sc[None, :]
            wv = w[:, None] * tl.where(c < 0, -v, v)
            bins += tl.where(tl.maximum(a - k0, 0)[None, :, :] == r[:, None, None], wv[None, :, :], 0.0)
        H = tl.reduce(bins, 1, _sum)
        if HAS_BIAS:
            H += tl.where(r[:, None] == 0, tl.load(bias_ptr + f, mask=fmask, other=0.0)[None, :], 0.0)
        # output phase t sees bins 0 .. min(t - 1, nl): potential Pc[min(t - 1, nl)]
        x = tl.associative_scan(H, 0, _sum) * tl.load(inv_scale_ptr + f, mask=fmask, other=0.0)[None, :]
        if SIGNED:
            mag = tl.abs(x)
        else:
            mag = x
        sgn = tl.where(x > 0, 2, tl.where(x < 0, 0, 1))  # sign + 1, packed with the phase: key = 4 t + sign + 1
        # phases t = r + 1 <= nl, while late bins still arrive
        live = (r < nl) & (r < T)
        thr = tl.load(thr_ptr + r, mask=live, other=0.0)
        key = tl.reduce(tl.where(live[:, None] & (mag >= thr[:, None]), 4 * (r[:, None] + 1) + sgn, 1 << 30), 0,
                        _min)
        # phases t > nl see the final potential: the first crossing is max(nl + 1, its round-off phase)
        last = r[:, None] == nl
        mag_f = tl.reduce(tl.where(last, mag, 0.0), 0, _sum)
        sgn_f = tl.reduce(tl.where(last, sgn, 0), 0, _sum)
        cnt = tl.full([BLOCK_F], 0, IDX)
        for t in range(0, T):
            cnt += (mag_f >= tl.load(thr_ptr + t)).to(IDX)
        t_f = tl.maximum(T + 1 - cnt, nl + 1)
        key = tl.minimum(key, tl.where((cnt > 0) & (t_f <= T), 4 * t_f + sgn_f, 1 << 30))
        fired = tl.where(key < (1 << 30), key >> 2, 0)
        out = m.to(tl.int64) * F + f
        tl.store(out_phase_ptr + out, fired.to(tl.int8), mask=fmask)
        if SIGNED:
            tl.store(out_sign_ptr + out, tl.where(fired > 0, (key & 3) - 1, 0).to(tl.int8), mask=fmask)

    if interpret:
        return exact_rows
    configs = [triton.Config({"BLOCK_E": be}, num_warps=nw) for be in (1, 2, 4, 8, 16) for nw in (4, 8)]
    return triton.autotune(configs, key=["F", "NB", "BLOCK_F"],
                           prune_configs_by={"early_config_prune": _prune})(exact_rows)


# register tile budget: bins x edges x features values per program
_TILE = 1 << 14


def _prune(configs, named_args, **kwargs):
    meta = {**named_args, **kwargs}
    tile = meta["NB"] * meta["BLOCK_F"]
    ok = [c for c in configs if c.kwargs["BLOCK_E"] * tile <= _TILE]
    return ok or [min(configs, key=lambda c: (c.kwargs["BLOCK_E"], c.num_warps))]


# features per program at most: a whole row of the usual hidden widths (coalesced int8 loads)
MAX_BLOCK_F = 256


def _block_f(F: int, nb: int) -> int:
    """A whole feature row per program up to MAX_BLOCK_F features, fewer with many late bins."""
    bf = min(MAX_BLOCK_F, max(16, 1 << (F - 1).bit_length()))
    while bf > 16 and nb * bf > _TILE:
        bf //= 2
    return bf


def _check(adj: Tensor, inp, bias: Tensor | None, thresholds: Tensor, T_in: int, Tw: int) -> None:
    phase = inp.phase
    if phase.dim() != 2:
        raise ValueError(f"aggregate_exact needs 2-D input spikes [nodes, features], got shape {tuple(phase.shape)}")
    N, F = phase.shape
    if adj.layout != torch.sparse_csr or adj.dim() != 2 or adj.shape[1] != N:
        raise ValueError(f"adjacency must be a sparse CSR [targets, {N}] tensor, got {adj.layout} "
                         f"{tuple(adj.shape)}")
    if int(T_in) != inp.code.T:
        raise ValueError(f"T_in = {T_in} differs from the input code's T = {inp.code.T}")
    if not 1 <= int(T_in) <= MAX_T:
        raise ValueError(f"the Triton kernel supports input codes with 1 <= T <= {MAX_T}, got {T_in}")
    if thresholds.numel() > MAX_T:
        raise ValueError(f"the Triton kernel supports output codes with T <= {MAX_T}, got {thresholds.numel()}")
    if int(Tw) < 0:
        raise ValueError(f"Tw must be >= 0, got {Tw}")
    if bias is not None and bias.numel() != F:
        raise ValueError(f"bias has {bias.numel()} entries, expected {F} (one per feature)")
    devs = {t.device for t in (adj, phase, thresholds) + ((bias,) if bias is not None else ())}
    if len(devs) != 1:
        raise ValueError(f"adjacency, spikes, bias and thresholds must be on one device, got {sorted(map(str, devs))}")
    if phase.numel():
        lo, hi = (int(v) for v in torch.aminmax(phase))
        if lo < 0 or hi > T_in:
            raise ValueError(f"input fire phases must lie in 0..{T_in}, got {lo}..{hi}")


def aggregate_exact(adj: Tensor, inp, bias: Tensor | None, scale: Tensor, thresholds: Tensor, T_in: int, Tw: int,
                    signed: bool) -> tuple[Tensor, Tensor | None]:
    """Fire phases of the aggregation neurons ``A-hat x`` for input spikes ``inp`` (a 2-D
    :class:`~spikegcn.spikes.PhaseSpikes` with int8 phases), as :func:`spikegcn.kernels.fused_cpu.aggregate_exact`.

    ``adj``: sparse CSR ``[targets, sources]``; the values' dtype (float32 or float64) is the compute dtype.
    ``scale``: output lambda (per feature or scalar); ``thresholds``: the ``[T]`` thresholds of the output code.
    Returns ``(phase, sign)`` (``sign`` only for signed neurons).
    """
    _check(adj, inp, bias, thresholds, T_in, Tw)
    phase = inp.phase
    dev = phase.device
    if not available(dev):
        raise RuntimeError(f"the Triton exact-mode kernel cannot run on {dev} here (needs Triton and a CUDA GPU; "
                           f"CPU tensors only under TRITON_INTERPRET=1)")
    N, F = phase.shape
    M = adj.shape[0]
    vals = adj.values()
    dtype = vals.dtype
    T = thresholds.numel()
    k0 = min(int(Tw) + 1, int(T_in))
    nl = int(T_in) - k0
    codes = (phase if inp.sign is None else phase * inp.sign).to(torch.int8).contiguous()
    table = inp.code.values(dtype, dev).contiguous()
    in_scale = inp.scale.to(dtype=dtype, device=dev).reshape(-1).expand(F).contiguous()
    inv = (1.0 / torch.as_tensor(scale, dtype=dtype, device=dev)).reshape(-1).expand(F).contiguous()
    b = bias.to(dtype).contiguous() if bias is not None else inv  # unread without a bias
    out_phase = torch.zeros((M, F), dtype=torch.int8, device=dev)
    out_sign = torch.zeros((M, F), dtype=torch.int8, device=dev) if signed else out_phase
    if M == 0 or F == 0:
        return out_phase, (out_sign if signed else None)
    nb = 1 << nl.bit_length()  # nl + 1 bins, padded to a power of two
    block_f = _block_f(F, nb)
    grid = (M, -(-F // block_f))
    args = (adj.crow_indices().contiguous(), adj.col_indices().contiguous(), vals.contiguous(), codes, table,
            in_scale, b, inv, thresholds.to(dtype=dtype, device=dev).contiguous(), out_phase, out_sign, F, T, k0, nl)
    meta = dict(NB=nb, HAS_BIAS=bias is not None, SIGNED=bool(signed), BLOCK_F=block_f)
    if _interpret():
        _kernel(True)[grid](*args, BLOCK_E=4, IDX=tl.int64, **meta)
    else:
        _kernel(False)[grid](*args, IDX=tl.int32, enable_fp_fusion=False, **meta)
    return out_phase, (out_sign if signed else None)
