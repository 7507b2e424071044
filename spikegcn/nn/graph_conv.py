"""Spiking drop-in for torch_geometric.nn.GraphConv."""
from __future__ import annotations

from torch import Tensor, nn

from .sage_conv import SpikingSAGEConv, _aggr_name


class SpikingGraphConv(SpikingSAGEConv):
    r"""The graph convolution of Morris et al. as one layer of one-spike neurons.

    .. math::
        \mathbf{x}'_i = \mathrm{Enc}\Big(\big(\mathbf{W}_1 \hat{\mathbf{x}}_i + \mathbf{W}_2
        \square_{j \in \mathcal{N}(i)} e_{j,i} \hat{\mathbf{x}}_j + \mathbf{b}\big)/\boldsymbol\lambda\Big)

    The operator of :class:`SpikingSAGEConv` with edge weights (``aggr`` ``"add"``, ``"mean"`` or ``"max"``).
    """

    def __init__(self, in_channels: int, out_channels: int, aggr: str = "add", bias: bool = True, **kwargs):
        super().__init__(in_channels, out_channels, aggr=aggr, root_weight=True, bias=bias, **kwargs)

    @classmethod
    def from_module(cls, conv: nn.Module, **kwargs) -> "SpikingGraphConv":
        """From a trained ``GraphConv`` (weights copied)."""
        layer = cls(conv.in_channels, conv.out_channels, aggr=_aggr_name(conv), bias=conv.lin_rel.bias is not None,
                    **kwargs)
        return layer.copy_weights([conv.lin_rel.weight, conv.lin_root.weight], conv.lin_rel.bias)

    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None = None, size=None):
        return super(SpikingSAGEConv, self).forward(x, edge_index, edge_weight)
