r"""The shared event kernel: spike events x synapses, accumulated per target.

Every spiking layer reduces to one operation: each spike event (source, fire phase, signed value) adds its
value times each of its synaptic weights to its targets. Two synapse structures cover the graph layers:

* **graph synapses** (aggregation, :math:`\hat A`): a spike of node ``n`` in feature ``f`` reaches every
  target node ``m`` with :math:`\hat A_{mn} \ne 0` in the same feature ``f`` (fan-out ``deg(n) + 1``);
* **dense synapses** (message passing, :math:`\cdot W`): a spike of node ``n`` in feature ``f`` reaches
  every output feature ``g`` of the same node with weight :math:`W_{gf}` (fan-out ``out_channels``).

:func:`accumulate_events` adds the events into a ``[bins, targets, features]`` buffer (``bins`` = the phase
groups asked for; layers stream one phase at a time so no ``T``-plane buffer of a whole layer exists). The
work is spikes x fan-out, like an event-driven chip, not phases x a dense matmul. It runs on torch-scatter where
it is installed with kernels for the tensors' device (its CPU kernels always; CUDA ones only in a CUDA build) and on
native ``index_add_`` otherwise (any device, e.g. a CUDA GPU under a CPU-only torch-scatter build, or ``meta``);
both give the same sums. :func:`scatter_backend` makes the choice.
"""
from __future__ import annotations

import torch
from torch import Tensor

try:  # optional fast path
    import torch_scatter

    HAS_TORCH_SCATTER = True
except ImportError:  # pragma: no cover - exercised by forcing backend="native"
    torch_scatter = None
    HAS_TORCH_SCATTER = False

__all__ = ["HAS_TORCH_SCATTER", "scatter_backend", "scatter_sum", "GraphSynapses", "DenseSynapses",
           "accumulate_events"]

# Expanded (event, synapse) pairs processed per chunk: bounds the temporary memory of a layer.
CHUNK = 1 << 23


def _scatter_has_kernels(device_type: str) -> bool:
    """Whether the installed torch-scatter has compiled kernels for tensors on ``device_type``."""
    if not HAS_TORCH_SCATTER:
        return False
    if device_type == "cpu":
        return True
    if device_type == "cuda":  # a build without CUDA reports -1
        return int(torch.ops.torch_scatter.cuda_version()) != -1
    return False


def scatter_backend(backend: str = "auto", device: torch.device | str = "cpu") -> str:
    """The scatter implementation for tensors on ``device``: ``"auto"`` picks torch-scatter where it has kernels
    for that device, native ``index_add_`` otherwise; an explicit ``"torch_scatter"`` that cannot run raises."""
    dev = torch.device(device).type
    if backend == "auto":
        return "torch_scatter" if _scatter_has_kernels(dev) else "native"
    if backend not in ("torch_scatter", "native"):
        raise ValueError(f"unknown scatter backend {backend!r} (use 'auto', 'torch_scatter' or 'native')")
    if backend == "torch_scatter" and not _scatter_has_kernels(dev):
        why = "is not installed" if not HAS_TORCH_SCATTER else f"has no kernels for {dev} tensors (a CPU-only build?)"
        raise RuntimeError(f"backend='torch_scatter' requested but torch-scatter {why}; use backend='auto' or "
                           f"'native'")
    return backend


def scatter_sum(src: Tensor, index: Tensor, out: Tensor, backend: str = "auto") -> Tensor:
    """``out[index[i]] += src[i]`` along dim 0 (rows of ``src`` may be vectors), in place."""
    if scatter_backend(backend, out.device) == "torch_scatter":
        torch_scatter.scatter(src, index, dim=0, out=out, reduce="sum")
    else:
        out.index_add_(0, index, src)
    return out


class GraphSynapses:
    r"""Sparse synapses :math:`\hat A` (``target x source``), stored source-major for event lookup.

    Args:
        rowptr, col, weight: CSR of :math:`\hat A^\top` (for source ``n``: targets ``col[rowptr[n]:rowptr[n+1]]``
            with weights ``weight[...]``).
        num_targets (int): number of target nodes.
    """

    def __init__(self, rowptr: Tensor, col: Tensor, weight: Tensor, num_targets: int):
        self.rowptr, self.col, self.weight, self.num_targets = rowptr, col, weight, num_targets
        self.fanout = rowptr[1:] - rowptr[:-1]

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> "GraphSynapses":
        """From PyG's ``edge_index`` (``source -> target``, messages flow ``edge_index[0] -> edge_index[1]``)."""
        src, dst = edge_index[0], edge_index[1]
        if edge_weight is None:
            edge_weight = torch.ones(src.numel(), dtype=torch.float32, device=src.device)
        perm = torch.argsort(src * num_nodes + dst)
        src, dst, w = src[perm], dst[perm], edge_weight[perm]
        counts = torch.bincount(src, minlength=num_nodes)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=src.device)
        rowptr[1:] = torch.cumsum(counts, 0)
        return cls(rowptr, dst, w, num_nodes)

    def to(self, device) -> "GraphSynapses":
        return GraphSynapses(self.rowptr.to(device), self.col.to(device), self.weight.to(device), self.num_targets)


class DenseSynapses:
    """Dense synapses of a linear map ``y = x W^T``: ``weight_t`` is ``W^T`` (``[in_features, out_features]``)."""

    def __init__(self, weight_t: Tensor):
        self.weight_t = weight_t

    @property
    def out_features(self) -> int:
        return self.weight_t.shape[1]


def accumulate_events(
    row: Tensor,
    col: Tensor,
    value: Tensor,
    synapses: GraphSynapses | DenseSynapses,
    out: Tensor,
    bins: Tensor | None = None,
    backend: str = "auto",
    chunk: int = CHUNK,
) -> Tensor:
    """Add spike events into ``out``: ``[targets, features]``, or ``[bins, targets, features]`` with ``bins``.

    Args:
        row, col: node and feature of every spike event (int64).
        value: signed value of every spike (phase value x sign x scale), in the units of ``out``.
        synapses: :class:`GraphSynapses` (``out[m, col] += A[m, row] * value``) or :class:`DenseSynapses`
            (``out[row, :] += value * W^T[col, :]``).
        out: the accumulation buffer, updated in place and returned.
        bins: phase bin of every event (``0..out.shape[0]-1``) when ``out`` is 3-D.
    """
    if row.numel() == 0:
        return out
    be = scatter_backend(backend, out.device)
    if out.dim() == 3:
        if bins is None:
            raise ValueError("a [bins, targets, features] buffer needs the bin of every event")
        # fold the bin into the target index: bin b of target t is row b * targets + t
        B, M, F = out.shape
        if isinstance(synapses, DenseSynapses):
            flat = accumulate_events(bins * M + row, col, value, synapses, out.view(B * M, F), None, backend, chunk)
            return flat.view(B, M, F)
        flat = out.view(B * M, F)
        shifted = GraphSynapses(synapses.rowptr, synapses.col, synapses.weight, M)
        _accumulate_graph(row, col, value, shifted, flat, be, chunk, offset=bins * M)
        return out
    if out.dim() != 2:
        raise ValueError(f"out must be [targets, features] or [bins, targets, features], got {tuple(out.shape)}")
    if isinstance(synapses, DenseSynapses):
        F_out = synapses.out_features
        step = max(1, chunk // max(1, F_out))
        for s in range(0, row.numel(), step):
            r, c, v = row[s : s + step], col[s : s + step], value[s : s + step]
            contrib = synapses.weight_t.index_select(0, c) * v.unsqueeze(1).to(out.dtype)
            scatter_sum(contrib, r, out, be)
        return out
    return _accumulate_graph(row, col, value, synapses, out, be, chunk)


def _accumulate_graph(row, col, value, synapses, out, be, chunk, offset: Tensor | None = None) -> Tensor:
    # expand every event over its fan-out, then one scalar scatter per (target, feature)
    F = out.shape[1]
    flat = out.view(-1)
    deg = synapses.fanout.index_select(0, row)
    ends = torch.cumsum(deg, 0)
    s = 0
    n = row.numel()
    while s < n:
        # largest e with adds(s..e) <= chunk (at least one event)
        base = ends[s - 1] if s > 0 else ends.new_zeros(())
        e = int(torch.searchsorted(ends, base + chunk, right=True))
        e = max(e, s + 1)
        r, c, v, d = row[s:e], col[s:e], value[s:e], deg[s:e]
        starts = synapses.rowptr.index_select(0, r)
        ev = torch.repeat_interleave(torch.arange(r.numel(), device=r.device), d)
        offs = torch.arange(ev.numel(), device=r.device) - torch.repeat_interleave(torch.cumsum(d, 0) - d, d)
        syn = starts.index_select(0, ev) + offs
        tgt = synapses.col.index_select(0, syn)
        if offset is not None:
            tgt = tgt + offset[s:e].index_select(0, ev)
        contrib = synapses.weight.index_select(0, syn).to(out.dtype) * v.index_select(0, ev).to(out.dtype)
        scatter_sum(contrib, tgt * F + c.index_select(0, ev), flat, be)
        s = e
    return out
