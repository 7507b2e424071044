"""Graph-level readout (global_add/mean/max_pool over a batch vector) as a spiking layer."""
from __future__ import annotations

import torch
from torch import Tensor

from ..operators import MaxGate, Sparse, ValueOp, sparse_matrix
from .base import as_spike_input
from .graph_layer import SpikingGraphLayer

POOLS = ("add", "mean", "max")


class SpikingGlobalPool(SpikingGraphLayer):
    r"""``global_{add,mean,max}_pool`` as one layer of one-spike neurons, one per graph and channel.

    .. math::
        \mathbf{r}_g = \mathrm{Enc}\Big(\square_{i:\,b_i = g}\hat{\mathbf{x}}_i/\boldsymbol\lambda\Big)

    add/mean: the sparse ``[graphs, nodes]`` pooling matrix (ones, or 1/size); max: a first-spike gate over the
    nodes of each graph (see :mod:`spikegcn.operators`). ``batch=None``: one graph.
    """

    def __init__(self, channels: int, reduce: str = "mean", **kwargs):
        super().__init__(channels, bias=False, **kwargs)
        if reduce not in POOLS:
            raise ValueError(f"reduce must be one of {POOLS}, got {reduce!r}")
        self.reduce = reduce

    def operator(self, batch: Tensor | None, num_nodes: int, size: int | None = None,
                 device: torch.device | None = None) -> ValueOp:
        if batch is None:
            batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
        if batch.numel() != num_nodes:
            raise ValueError(f"batch has {batch.numel()} entries but x has {num_nodes} nodes")
        graphs = int(size) if size is not None else (int(batch.max()) + 1 if batch.numel() else 0)
        index = torch.stack([torch.arange(num_nodes, device=batch.device), batch.long()])
        if self.reduce == "max":
            return MaxGate(index, graphs)
        dtype = self.scale.dtype
        w = None
        if self.reduce == "mean":
            counts = torch.bincount(batch.long(), minlength=graphs).to(dtype).clamp_min(1)
            w = counts.reciprocal().index_select(0, batch.long())
        return Sparse(sparse_matrix(index, w, (graphs, num_nodes), dtype))

    @torch.no_grad()
    def forward(self, x, batch: Tensor | None = None, size: int | None = None):
        inp = as_spike_input(x)
        device = getattr(inp, "phase", getattr(inp, "bits", None)).device
        return self.run([inp], self.operator(batch, inp.shape[0], size, device))

    def extra_repr_args(self) -> str:
        return f"reduce={self.reduce!r}"
