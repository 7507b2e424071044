"""Spiking drop-in for torch_geometric.nn.SimpleConv."""
from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.utils import add_self_loops

from ..operators import Identity, Join, ValueOp
from .graph_layer import AGGRS, SpikingGraphLayer, aggregation_op


class SpikingSimpleConv(SpikingGraphLayer):
    r"""Parameter-free message passing as one layer of one-spike neurons.

    .. math::
        \mathbf{x}'_i = \mathrm{Enc}\Big(\big(\square_{j \in \mathcal{N}(i)} e_{ji}\hat{\mathbf{x}}_j
        \;[+\,\hat{\mathbf{x}}_i]\big)/\boldsymbol\lambda\Big)

    ``combine_root``: ``None``, ``"sum"`` (a join with the input stream) or ``"self_loop"``.
    """

    def __init__(self, channels: int, aggr: str = "sum", combine_root: str | None = None, **kwargs):
        super().__init__(channels, bias=False, **kwargs)
        if aggr not in AGGRS:
            raise ValueError(f"aggr must be one of {AGGRS}, got {aggr!r}")
        if combine_root not in (None, "sum", "self_loop"):
            raise ValueError(f"combine_root must be None, 'sum' or 'self_loop', got {combine_root!r} "
                             f"('cat' puts two maps side by side: not one neuron layer)")
        self.aggr, self.combine_root = aggr, combine_root

    @classmethod
    def from_module(cls, conv: nn.Module, channels: int, **kwargs) -> "SpikingSimpleConv":
        """From a ``SimpleConv`` (no weights; ``channels``: its feature width)."""
        aggr = conv.aggr if isinstance(conv.aggr, str) else None
        if aggr is None:
            raise ValueError(f"SimpleConv with aggregation {conv.aggr!r} is not supported (mean, sum, max are)")
        return cls(channels, aggr=aggr, combine_root=conv.combine_root, **kwargs)

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> ValueOp:
        if self.combine_root == "self_loop":
            edge_index, edge_weight = add_self_loops(edge_index, edge_weight, num_nodes=num_nodes)
        agg = aggregation_op(edge_index, edge_weight, num_nodes, self.aggr, self.scale.dtype)
        return Join(agg, Identity(), inputs=(0, 0)) if self.combine_root == "sum" else agg

    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None = None, size=None):
        return super().forward(x, edge_index, edge_weight)

    def extra_repr_args(self) -> str:
        return f"aggr={self.aggr!r}, combine_root={self.combine_root!r}"
