"""The aggregation of torch_geometric.nn.GINConv as a spiking layer (its MLP converts layer by layer)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..operators import Sparse, ValueOp, sparse_matrix
from .graph_layer import SpikingGraphLayer


class SpikingGINAggregation(SpikingGraphLayer):
    r"""GIN's neighbourhood sum as one layer of one-spike neurons.

    .. math::
        \mathbf{x}'_i = \mathrm{Enc}\Big(\big((1+\epsilon)\hat{\mathbf{x}}_i
        + \textstyle\sum_{j \in \mathcal{N}(i)} \hat{\mathbf{x}}_j\big)/\boldsymbol\lambda\Big)

    The operator is the sparse :math:`\mathbf{A} + (1+\epsilon)\mathbf{I}`. ``GINConv`` is
    :math:`h_\Theta` of this sum; the converter puts these neurons (signed: no ReLU in the ANN there) before the
    MLP :math:`h_\Theta`, whose layers convert as any ``Linear``/``BatchNorm``/``ReLU`` stack.
    """

    def __init__(self, channels: int, eps: float = 0.0, **kwargs):
        super().__init__(channels, bias=False, **kwargs)
        self.eps = eps

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> ValueOp:
        dtype = self.scale.dtype
        loops = torch.arange(num_nodes, device=edge_index.device)
        index = torch.cat([edge_index, torch.stack([loops, loops])], 1)
        w = torch.cat([torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device),
                       torch.full((num_nodes,), 1.0 + self.eps, dtype=dtype, device=edge_index.device)])
        return Sparse(sparse_matrix(index, w, (num_nodes, num_nodes), dtype))

    def forward(self, x, edge_index: Tensor, size=None):
        return super().forward(x, edge_index, None)

    def extra_repr_args(self) -> str:
        return f"eps={self.eps:g}"
