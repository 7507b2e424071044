"""Spiking drop-in for torch_geometric.nn.TAGConv."""
from __future__ import annotations

from torch import Tensor, nn

from ..operators import Krylov, Sparse, ValueOp, sparse_matrix
from .graph_layer import SpikingGraphLayer, gcn_adjacency, glorot_weight


class SpikingTAGConv(SpikingGraphLayer):
    r"""Topology adaptive graph convolution (Du et al.) as one layer of one-spike neurons.

    .. math::
        \mathbf{X}' = \mathrm{Enc}\Big(\big(\textstyle\sum_{k=0}^{K} \hat{\mathbf{A}}^k \hat{\mathbf{X}}
        \mathbf{W}_k^\top + \mathbf{b}\big)/\boldsymbol\lambda\Big),
        \qquad \hat{\mathbf{A}} = \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}\ \text{(no self-loops)}

    A polynomial of one sparse operator: ``Krylov(A-hat, K, weights=[W_0..W_K])``.
    """

    def __init__(self, in_channels: int, out_channels: int, K: int = 3, normalize: bool = True, bias: bool = True,
                 **kwargs):
        super().__init__(out_channels, bias=bias, **kwargs)
        self.in_channels, self.out_channels, self.K, self.normalize = in_channels, out_channels, K, normalize
        self.weights = nn.ParameterList([glorot_weight(out_channels, in_channels) for _ in range(K + 1)])


    @classmethod
    def from_module(cls, conv: nn.Module, **kwargs) -> "SpikingTAGConv":
        """From a trained ``TAGConv`` (weights copied)."""
        layer = cls(conv.in_channels, conv.out_channels, K=conv.K, normalize=conv.normalize,
                    bias=conv.bias is not None, **kwargs)
        return layer.copy_weights([lin.weight for lin in conv.lins], conv.bias)

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> ValueOp:
        dtype = self.scale.dtype
        if self.normalize:
            adj = gcn_adjacency(edge_index, edge_weight, num_nodes, dtype, add_self_loops=False)
        else:
            adj = Sparse(sparse_matrix(edge_index, edge_weight, (num_nodes, num_nodes), dtype))
        return Krylov(adj, self.K, weights=list(self.weights))

    def extra_repr_args(self) -> str:
        return f"in={self.in_channels}, K={self.K}"
