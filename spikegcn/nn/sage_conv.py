"""Spiking drop-in for torch_geometric.nn.SAGEConv."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..operators import Chain, Dense, Join, ValueOp
from .graph_layer import AGGRS, SpikingGraphLayer, aggregation_op, glorot_weight


class SpikingSAGEConv(SpikingGraphLayer):
    r"""GraphSAGE as one layer of one-spike neurons.

    .. math::
        \mathbf{x}'_i = \mathrm{Enc}\Big(\big(\mathbf{W}_2\,\square_{j \in \mathcal{N}(i)} \hat{\mathbf{x}}_j
        + \mathbf{W}_1 \hat{\mathbf{x}}_i + \mathbf{b}\big)/\boldsymbol\lambda\Big)

    with :math:`\square` the mean, sum or max (a first-spike gate, see :mod:`spikegcn.operators`) and the root
    term only when ``root_weight``. The operator is ``Join(Chain(aggregation, W_2), W_1)`` on one input stream.

    Args:
        in_channels, out_channels, aggr, root_weight, bias: as in ``SAGEConv`` (no ``project``/``normalize``).
        code, signed, mode, output, backend: see :class:`SpikingGraphLayer`.
    """

    def __init__(self, in_channels: int, out_channels: int, aggr: str = "mean", root_weight: bool = True,
                 bias: bool = True, **kwargs):
        super().__init__(out_channels, bias=bias, **kwargs)
        if aggr not in AGGRS:
            raise ValueError(f"aggr must be one of {AGGRS}, got {aggr!r}")
        self.in_channels, self.out_channels, self.aggr, self.root_weight = in_channels, out_channels, aggr, root_weight
        self.weight_neigh = glorot_weight(out_channels, in_channels)
        self.weight_root = glorot_weight(out_channels, in_channels) if root_weight else None


    @classmethod
    def from_module(cls, conv: nn.Module, **kwargs) -> "SpikingSAGEConv":
        """From a trained ``SAGEConv`` (weights copied)."""
        layer = cls(conv.in_channels, conv.out_channels, aggr=_aggr_name(conv), root_weight=conv.root_weight,
                    bias=conv.lin_l.bias is not None, **kwargs)
        return layer.copy_weights([conv.lin_l.weight] + ([conv.lin_r.weight] if conv.root_weight else []),
                                  conv.lin_l.bias)

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> ValueOp:
        agg = aggregation_op(edge_index, edge_weight, num_nodes, self.aggr, self.scale.dtype)
        neigh = Chain(agg, Dense(self.weight_neigh))
        return Join(neigh, Dense(self.weight_root), inputs=(0, 0)) if self.weight_root is not None else neigh

    @torch.no_grad()
    def forward(self, x, edge_index: Tensor, size=None):
        return super().forward(x, edge_index, None)

    def extra_repr_args(self) -> str:
        return f"in={self.in_channels}, aggr={self.aggr!r}, root_weight={self.root_weight}"


def _aggr_name(conv: nn.Module) -> str:
    aggr = conv.aggr if isinstance(conv.aggr, str) else None
    if aggr is None:
        raise ValueError(f"{type(conv).__name__} with aggregation {conv.aggr!r} is not supported "
                         f"(mean, sum/add and max are)")
    return aggr
