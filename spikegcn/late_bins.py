r"""Every late input phase of a composite operator at once (exact mode with a wait :math:`T_w < T`).

On the event path (:func:`spikegcn.simulate.run_layer`) a layer built from :mod:`spikegcn.operators` adds, for
each input phase :math:`p > k_0` in turn, :meth:`~spikegcn.operators.ValueOp.delta`: the operator applied to the
values fired at :math:`p`. That is one pass of torch calls per phase (a decode, a mask, a matrix product, the
neuron update). :func:`late_bins` computes the same contributions for all late phases together, as bins
``[rows, T_in - k0, C]`` (bin ``q``: input phase ``k0 + 1 + q``) for one block of output rows, with the same float
operations per value:

* the values fired at a phase (a one-spike input's decoded value where its phase matches, +0 elsewhere; a binary
  input's prefix difference) are placed in their bin;
* a :class:`~spikegcn.operators.Sparse` map on one-spike int8 input or binary codes takes its bins from a compiled
  aggregation (``fused_cpu.aggregate_bins`` / ``aggregate_bins_bits``, the same sums as ``A x`` phase by phase)
  block by block, otherwise it runs one
  product per phase, as the event path does, once for all rows (kept for the layer's later blocks);
* a :class:`~spikegcn.operators.Dense` map multiplies all bins in one matrix product (rows are independent);
* :class:`~spikegcn.operators.Chain` and :class:`~spikegcn.operators.Join` compose as their ``delta`` does (a
  phase where nothing fired adds +0 instead of being skipped, which changes no sum's value).

The compiled neurons (``fire_bins``) then step over the bins. Operators without a batched form (polynomials,
gates, streams with offsets) give ``None``, and the caller keeps the event path.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .kernels import fused_cpu
from .operators import Chain, Dense, Identity, Join, Sparse, ValueOp, _fired_at, _values
from .spikes import BinarySpikes, PhaseSpikes

__all__ = ["supports_bins", "late_bins"]

_ROW_MAPS = (Dense, Identity)  # operators that map row m to row m (may follow the first operator of a chain)


def _rows_op(op) -> bool:
    from .inference import Rows  # the layer-wise path's row selection (imports this package's simulate)

    return isinstance(op, Rows)


def supports_bins(op: ValueOp, inp) -> bool:
    """Whether :func:`late_bins` serves ``op`` on input ``inp`` (checked before any work)."""
    if isinstance(op, Join):
        items = getattr(inp, "items", (inp,))
        offsets = getattr(inp, "offsets", (0,))
        if any(offsets) or len({i.T_in for i in items}) != 1:
            return False
        return all(supports_bins(o, items[i]) for o, i in zip(op.ops, op.inputs))
    if isinstance(op, Chain):
        return supports_bins(op.ops[0], inp) and all(isinstance(o, _ROW_MAPS) for o in op.ops[1:])
    if not isinstance(inp, (PhaseSpikes, BinarySpikes)) or len(inp.shape) != 2:
        return False
    return isinstance(op, (Sparse, *_ROW_MAPS)) or _rows_op(op)


def _fired_bins(item: PhaseSpikes | BinarySpikes, k0: int, dtype: torch.dtype, rows: Tensor | slice) -> Tensor:
    """``[rows, T_in - k0, F]``: the values ``item`` fires at each phase ``k0 + 1 ..``, bit for bit those of
    :func:`spikegcn.operators._fired_at` (the decoded value, or a binary input's prefix difference)."""
    nl = item.T_in - k0
    if isinstance(item, PhaseSpikes):
        # only these rows decoded (a chunk's sources can outnumber its rows 50 to 1): the decode is per element
        ph = item.phase[rows]
        sub = PhaseSpikes(phase=ph, code=item.code, scale=item.scale,
                          sign=None if item.sign is None else item.sign[rows])
        v = _values(sub, item.T_in, dtype)
        late = ph > k0
        out = fused_cpu.empty((ph.shape[0], nl, ph.shape[1]), dtype, ph.device).zero_()
        idx = (ph.to(torch.int64) - (k0 + 1)).clamp_(min=0).unsqueeze(1)
        return out.scatter_(1, idx, torch.where(late, v, torch.zeros((), dtype=dtype, device=v.device)).unsqueeze(1))
    part = dataclasses.replace(item, bits=item.bits[rows], sign=None if item.sign is None else item.sign[rows])
    prev = _values(part, k0, dtype)
    out = fused_cpu.empty((part.bits.shape[0], nl, part.bits.shape[1]), dtype, part.bits.device)
    for q in range(nl):
        high = _values(part, k0 + 1 + q, dtype)
        out[:, q] = high - prev
        prev = high
    return out


def _map(op: ValueOp, d: Tensor) -> Tensor:
    """A row map applied to every bin: one matrix product for all phases."""
    if isinstance(op, Identity):
        return d
    n, nl, f = d.shape
    return op.forward([d.reshape(n * nl, f)]).reshape(n, nl, -1)


def _sparse_rows(adj: Tensor, lo: int, hi: int) -> Tensor:
    """Rows ``lo .. hi - 1`` of a CSR matrix (a view of its column indices and values)."""
    crow = adj.crow_indices()
    a, b = int(crow[lo]), int(crow[hi])
    return torch.sparse_csr_tensor(crow[lo:hi + 1] - a, adj.col_indices()[a:b], adj.values()[a:b],
                                   (hi - lo, adj.shape[1]), device=adj.device, check_invariants=False)


def _sparse_bins(op: Sparse, item, k0: int, dtype: torch.dtype, cache: dict, lo: int, hi: int) -> Tensor:
    adj = _sparse_rows(op.adj, lo, hi)
    if dtype == torch.float32 and adj.dtype == torch.float32:
        bins = (fused_cpu.aggregate_bins(adj, item, k0) if type(item) is PhaseSpikes else
                fused_cpu.aggregate_bins_bits(adj, item, k0))
        if bins is not None:
            return bins
    key = ("sparse bins", id(op), id(item), dtype)
    hit = cache.get(key)
    if hit is None or hit[0] is not item:  # every output row once, a phase at a time: [rows, late phases, F]
        out = None
        for q in range(item.T_in - k0):
            y = op.forward([_fired_at(item, k0 + 1 + q, dtype, cache)])
            if out is None:
                out = torch.empty((y.shape[0], item.T_in - k0, y.shape[1]), dtype=y.dtype, device=y.device)
            out[:, q] = y
        hit = cache[key] = (item, out)
    return hit[1][lo:hi]


def late_bins(op: ValueOp, inp, k0: int, dtype: torch.dtype, cache: dict, lo: int, hi: int) -> Tensor:
    """``[hi - lo, T_in - k0, C]``: bin ``q`` holds ``op.delta(inp, k0 + 1 + q)`` (zeros where nothing fired) for
    output rows ``lo .. hi - 1``, the same values bit for bit (see the module docstring). ``cache``: a dict kept for
    one layer. Call only where :func:`supports_bins` holds."""
    if isinstance(op, Join):
        items = getattr(inp, "items", (inp,))
        out = None
        for o, i in zip(op.ops, op.inputs):
            d = late_bins(o, items[i], k0, dtype, cache, lo, hi)
            out = d if out is None else torch.add(out, d, out=fused_cpu.empty(out.shape, out.dtype, out.device))
        return out
    if isinstance(op, Chain):
        d = late_bins(op.ops[0], inp, k0, dtype, cache, lo, hi)
        for o in op.ops[1:]:
            d = _map(o, d)
        return d
    if isinstance(op, Sparse):
        return _sparse_bins(op, inp, k0, dtype, cache, lo, hi)
    if _rows_op(op):
        return _fired_bins(inp, k0, dtype, op.index[lo:hi])  # type: ignore[attr-defined]  # a Rows
    return _map(op, _fired_bins(inp, k0, dtype, slice(lo, hi)))
