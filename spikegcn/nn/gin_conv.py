"""torch_geometric.nn.GINConv as spiking layers: the sum fused with the MLP's first Linear (or alone)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..operators import Chain, Dense, Sparse, ValueOp, sparse_matrix
from .graph_layer import SpikingGraphLayer, glorot_weight


def gin_matrix(edge_index: Tensor, num_nodes: int, eps: float, dtype: torch.dtype) -> Sparse:
    """The sparse :math:`A + (1+\\epsilon) I` (``[target, source]``)."""
    loops = torch.arange(num_nodes, device=edge_index.device)
    index = torch.cat([edge_index, torch.stack([loops, loops])], 1)
    w = torch.cat([torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device),
                   torch.full((num_nodes,), 1.0 + eps, dtype=dtype, device=edge_index.device)])
    return Sparse(sparse_matrix(index, w, (num_nodes, num_nodes), dtype))


class SpikingGINAggregation(SpikingGraphLayer):
    r"""GIN's neighbourhood sum as one layer of one-spike neurons.

    .. math::
        \mathbf{x}'_i = \mathrm{Enc}\Big(\big((1+\epsilon)\hat{\mathbf{x}}_i
        + \textstyle\sum_{j \in \mathcal{N}(i)} \hat{\mathbf{x}}_j\big)/\boldsymbol\lambda\Big)

    The operator is the sparse :math:`\mathbf{A} + (1+\epsilon)\mathbf{I}`. The converter uses it (signed
    neurons: no ReLU in the ANN there) only when the MLP :math:`h_\Theta` does not start with a ``Linear``;
    otherwise the sum and that ``Linear`` are one layer (:class:`SpikingGINConv`).
    """

    def __init__(self, channels: int, eps: float = 0.0, **kwargs):
        super().__init__(channels, bias=False, **kwargs)
        self.eps = eps

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> ValueOp:
        return gin_matrix(edge_index, num_nodes, self.eps, self.scale.dtype)

    def forward(self, x, edge_index: Tensor, size=None):
        return super().forward(x, edge_index, None)

    def extra_repr_args(self) -> str:
        return f"eps={self.eps:g}"


class SpikingGINConv(SpikingGraphLayer):
    r"""GIN's sum and the first ``Linear`` of its MLP as one layer of one-spike neurons.

    .. math::
        \mathbf{x}'_i = \mathrm{Enc}\Big(\big(\mathbf{W}\big((1+\epsilon)\hat{\mathbf{x}}_i
        + \textstyle\sum_{j \in \mathcal{N}(i)} \hat{\mathbf{x}}_j\big) + \mathbf{b}\big)/\boldsymbol\lambda\Big)

    The ANN has no non-linearity between the sum and the first ``Linear`` of :math:`h_\Theta`, so both are one
    synaptic operator ``Chain(A + (1+eps) I, W)`` and the neurons sit after the first ReLU (or BatchNorm) of the
    MLP, whose other layers convert as any ``Linear``/``BatchNorm``/``ReLU`` stack.
    """

    def __init__(self, in_channels: int, out_channels: int, eps: float = 0.0, bias: bool = True, **kwargs):
        super().__init__(out_channels, bias=bias, **kwargs)
        self.in_channels, self.out_channels, self.eps = in_channels, out_channels, eps
        self.weight = glorot_weight(out_channels, in_channels)

    @classmethod
    def from_linear(cls, lin: nn.Module, eps: float, **kwargs) -> "SpikingGINConv":
        """From the first ``Linear`` of a trained ``GINConv``'s MLP and the conv's ``eps``."""
        layer = cls(lin.weight.shape[1], lin.weight.shape[0], eps=eps, bias=lin.bias is not None, **kwargs)
        return layer.copy_weights([lin.weight], lin.bias)

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> ValueOp:
        return Chain(gin_matrix(edge_index, num_nodes, self.eps, self.scale.dtype), Dense(self.weight))

    def forward(self, x, edge_index: Tensor, size=None):
        return super().forward(x, edge_index, None)

    def extra_repr_args(self) -> str:
        return f"in={self.in_channels}, eps={self.eps:g}"
