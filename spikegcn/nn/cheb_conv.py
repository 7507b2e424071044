"""Spiking drop-in for torch_geometric.nn.ChebConv."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import get_laplacian

from ..operators import Krylov, Sparse, ValueOp, sparse_matrix
from .graph_layer import SpikingGraphLayer, checked_graph, glorot_weight


def scaled_laplacian(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int, normalization: str | None,
                     dtype: torch.dtype, lambda_max: Tensor | float | None = None,
                     batch: Tensor | None = None) -> Sparse:
    r""":math:`\tilde L = 2L/\lambda_{max} - I` as ``ChebConv`` builds it (signed entries: the off-diagonal
    :math:`-D^{-1/2}AD^{-1/2}` of the symmetric normalisation is negative)."""
    edge_index, w = get_laplacian(edge_index, edge_weight, normalization, dtype, num_nodes)
    if lambda_max is None:
        lambda_max = 2.0 * w.max()
    elif not isinstance(lambda_max, Tensor):
        lambda_max = torch.tensor(lambda_max, dtype=dtype, device=edge_index.device)
    if batch is not None and lambda_max.numel() > 1:
        lambda_max = lambda_max[batch[edge_index[0]]]
    w = (2.0 * w) / lambda_max
    w = w.masked_fill(w == float("inf"), 0)
    w = torch.where(edge_index[0] == edge_index[1], w - 1, w)
    return Sparse(sparse_matrix(edge_index, w, (num_nodes, num_nodes), dtype))


class SpikingChebConv(SpikingGraphLayer):
    r"""Chebyshev spectral graph convolution as one layer of one-spike neurons.

    .. math::
        \mathbf{X}' = \mathrm{Enc}\Big(\big(\textstyle\sum_{k=0}^{K-1} \mathbf{Z}^{(k)} \mathbf{W}_k^\top
        + \mathbf{b}\big)/\boldsymbol\lambda\Big), \quad \mathbf{Z}^{(0)} = \hat{\mathbf{X}},\
        \mathbf{Z}^{(1)} = \tilde{\mathbf{L}}\hat{\mathbf{X}},\
        \mathbf{Z}^{(k)} = 2\tilde{\mathbf{L}}\mathbf{Z}^{(k-1)} - \mathbf{Z}^{(k-2)}

    :math:`\tilde L` has negative entries: these synapses are signed (inhibitory). The operator is
    ``Krylov(L~, K - 1, "cheb", weights=[W_0..W_{K-1}])``.
    """

    def __init__(self, in_channels: int, out_channels: int, K: int, normalization: str | None = "sym",
                 bias: bool = True, **kwargs):
        super().__init__(out_channels, bias=bias, **kwargs)
        self.in_channels, self.out_channels, self.K, self.normalization = in_channels, out_channels, K, normalization
        self.weights = nn.ParameterList([glorot_weight(out_channels, in_channels) for _ in range(K)])


    @classmethod
    def from_module(cls, conv: nn.Module, **kwargs) -> "SpikingChebConv":
        """From a trained ``ChebConv`` (weights copied)."""
        layer = cls(conv.in_channels, conv.out_channels, K=len(conv.lins), normalization=conv.normalization,
                    bias=conv.bias is not None, **kwargs)
        return layer.copy_weights([lin.weight for lin in conv.lins], conv.bias)

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int,
                 batch: Tensor | None = None, lambda_max: Tensor | float | None = None) -> ValueOp:
        lap = scaled_laplacian(edge_index, edge_weight, num_nodes, self.normalization, self.scale.dtype,
                               lambda_max, batch)
        return Krylov(lap, self.K - 1, "cheb", weights=list(self.weights))

    @torch.no_grad()
    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None = None, batch: Tensor | None = None,
                lambda_max: Tensor | None = None):
        inp = self.spike_input(x, edge_index)
        n = inp.shape[0]
        edge_index, edge_weight = checked_graph(edge_index, edge_weight, n)
        return self.run([inp], self.operator(edge_index, edge_weight, n, batch, lambda_max))

    def extra_repr_args(self) -> str:
        return f"in={self.in_channels}, K={self.K}, normalization={self.normalization!r}"
