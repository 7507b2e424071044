"""Spiking drop-in for torch_geometric.nn.SGConv."""
from __future__ import annotations

from torch import Tensor, nn

from ..operators import Chain, Dense, Krylov, ValueOp
from .graph_layer import SpikingGraphLayer, gcn_adjacency, glorot_weight


class SpikingSGConv(SpikingGraphLayer):
    r"""Simplified graph convolution (Wu et al.) as one layer of one-spike neurons.

    .. math::
        \mathbf{X}' = \mathrm{Enc}\big((\hat{\mathbf{A}}^K \hat{\mathbf{X}} \mathbf{W}^\top + \mathbf{b})
        /\boldsymbol\lambda\big)

    The ``K`` propagations carry no neurons (the ANN has none there): the operator is
    ``Chain(Krylov(A-hat, K), W)``. ``cached`` is not used: the graph is read at every call.
    """

    def __init__(self, in_channels: int, out_channels: int, K: int = 1, add_self_loops: bool = True,
                 bias: bool = True, **kwargs):
        super().__init__(out_channels, bias=bias, **kwargs)
        self.in_channels, self.out_channels, self.K, self.add_self_loops = in_channels, out_channels, K, add_self_loops
        self.weight = glorot_weight(out_channels, in_channels)


    @classmethod
    def from_module(cls, conv: nn.Module, **kwargs) -> "SpikingSGConv":
        """From a trained ``SGConv`` (weights copied)."""
        layer = cls(conv.in_channels, conv.out_channels, K=conv.K, add_self_loops=conv.add_self_loops,
                    bias=conv.lin.bias is not None, **kwargs)
        return layer.copy_weights([conv.lin.weight], conv.lin.bias)

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> ValueOp:
        adj = gcn_adjacency(edge_index, edge_weight, num_nodes, self.scale.dtype, self.add_self_loops)
        return Chain(Krylov(adj, self.K), Dense(self.weight))

    def extra_repr_args(self) -> str:
        return f"in={self.in_channels}, K={self.K}"
