"""Graph-level readout (global_add/mean/max_pool over a batch vector) as a spiking layer."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..operators import Chain, Dense, MaxGate, Sparse, ValueOp, sparse_matrix
from .base import as_spike_input
from .graph_layer import SpikingGraphLayer, glorot_weight

POOLS = ("add", "mean", "max")


class SpikingGlobalPool(SpikingGraphLayer):
    r"""``global_{add,mean,max}_pool`` as one layer of one-spike neurons, one per graph and channel.

    .. math::
        \mathbf{r}_g = \mathrm{Enc}\Big(\square_{i:\,b_i = g}\hat{\mathbf{x}}_i/\boldsymbol\lambda\Big)

    add/mean: the sparse ``[graphs, nodes]`` pooling matrix (ones, or 1/size); max: a first-spike gate over the
    nodes of each graph (see :mod:`spikegcn.operators`). ``batch=None``: one graph.

    An add/mean pool whose only consumer is a ``Linear`` (a graph classifier's head) is one layer with it
    (:meth:`from_linear`): both are linear, so the operator is ``Chain(pool, W)`` plus the bias and the neurons
    sit after the ``Linear``, as GIN's sum fuses with its MLP's first ``Linear``. The pooled sums are never
    re-encoded, which saves a rounding of values whose range grows with the graph size.

    Args:
        channels (int): output channels (the ``Linear``'s output features when fused).
        reduce (str): ``"add"``, ``"mean"`` or ``"max"``.
        in_channels (int, optional): input features of a fused ``Linear`` (its weight is ``[channels,
            in_channels]``); ``None``: the pool alone.
        bias (bool): the fused ``Linear``'s bias.
    """

    def __init__(self, channels: int, reduce: str = "mean", in_channels: int | None = None, bias: bool = False,
                 **kwargs):
        super().__init__(channels, bias=bias and in_channels is not None, **kwargs)
        if reduce not in POOLS:
            raise ValueError(f"reduce must be one of {POOLS}, got {reduce!r}")
        if in_channels is not None and reduce == "max":
            raise ValueError("only an add or mean pool fuses with the Linear after it (max is a gate, not linear)")
        self.reduce, self.in_channels = reduce, in_channels
        self.weight = glorot_weight(channels, in_channels) if in_channels is not None else None

    @classmethod
    def from_linear(cls, lin: nn.Module, reduce: str, **kwargs) -> "SpikingGlobalPool":
        """An add/mean pool and the trained ``Linear`` after it as one layer."""
        layer = cls(lin.weight.shape[0], reduce, in_channels=lin.weight.shape[1], bias=lin.bias is not None,
                    **kwargs)
        return layer.copy_weights([lin.weight], lin.bias)

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
        pool = Sparse(sparse_matrix(index, w, (graphs, num_nodes), dtype))
        return pool if self.weight is None else Chain(pool, Dense(self.weight))

    @torch.no_grad()
    def forward(self, x, batch: Tensor | None = None, size: int | None = None):
        inp = as_spike_input(x)
        device = getattr(inp, "phase", getattr(inp, "bits", None)).device
        return self.run([inp], self.operator(batch, inp.shape[0], size, device))

    def extra_repr_args(self) -> str:
        fused = f", in={self.in_channels} (fused Linear)" if self.in_channels is not None else ""
        return f"reduce={self.reduce!r}{fused}"
