"""Spiking drop-in for torch_geometric.nn.GCN2Conv."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..operators import Chain, Dense, Join, Sparse, ValueOp
from .base import as_spike_input
from .graph_layer import SpikingGraphLayer, checked_graph, gcn_adjacency


class SpikingGCN2Conv(SpikingGraphLayer):
    r"""GCNII (Chen et al.): initial residual and identity mapping, as one layer of one-spike neurons.

    .. math::
        \mathbf{X}' = \mathrm{Enc}\Big(\big((1-\alpha)\hat{\mathbf{A}}\hat{\mathbf{X}}\,\mathbf{M}_1
        + \alpha\hat{\mathbf{X}}^{(0)}\mathbf{M}_2\big)/\boldsymbol\lambda\Big), \qquad
        \mathbf{M}_i = (1-\beta)\mathbf{I} + \beta\mathbf{W}_i

    (``shared_weights``: :math:`\mathbf{W}_2 = \mathbf{W}_1`). Two input streams, the layer input and the
    initial representation: the operator is ``Join(Chain((1-alpha) A-hat, M_1), alpha M_2)``.
    """

    stream_args = ("x", "x_0")

    def __init__(self, channels: int, alpha: float, theta: float | None = None, layer: int | None = None,
                 shared_weights: bool = True, add_self_loops: bool = True, normalize: bool = True, **kwargs):
        super().__init__(channels, bias=False, **kwargs)
        self.alpha, self.add_self_loops, self.normalize = alpha, add_self_loops, normalize
        self.beta = math.log(theta / layer + 1) if theta is not None and layer is not None else 1.0
        self.weight1 = nn.Parameter(torch.empty(channels, channels))
        self.weight2 = None if shared_weights else nn.Parameter(torch.empty(channels, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for w in (self.weight1, self.weight2):
            if w is not None:
                nn.init.xavier_uniform_(w)

    @classmethod
    def from_module(cls, conv: nn.Module, **kwargs) -> "SpikingGCN2Conv":
        """From a trained ``GCN2Conv`` (weights and beta copied)."""
        layer = cls(conv.channels, conv.alpha, shared_weights=conv.weight2 is None,
                    add_self_loops=conv.add_self_loops, normalize=conv.normalize, **kwargs)
        layer.beta = conv.beta
        with torch.no_grad():
            layer.weight1.copy_(conv.weight1)
            if conv.weight2 is not None:
                layer.weight2.copy_(conv.weight2)
        return layer

    def _mapping(self, w: Tensor, gain: float = 1.0) -> Dense:
        eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
        return Dense((gain * ((1.0 - self.beta) * eye + self.beta * w)).t())  # x M = x (M^T)^T

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> ValueOp:
        adj = gcn_adjacency(edge_index, edge_weight, num_nodes, self.scale.dtype, self.add_self_loops,
                            normalize=self.normalize).adj
        prop = Sparse(adj * (1.0 - self.alpha))
        w2 = self.weight1 if self.weight2 is None else self.weight2
        return Join(Chain(prop, self._mapping(self.weight1)), self._mapping(w2, self.alpha))

    @torch.no_grad()
    def forward(self, x, x_0, edge_index: Tensor, edge_weight: Tensor | None = None):
        inp, inp0 = as_spike_input(x), as_spike_input(x_0)
        n = inp.shape[0]
        edge_index, edge_weight = checked_graph(edge_index, edge_weight, n)
        return self.run([inp, inp0], self.operator(edge_index, edge_weight, n))

    def extra_repr_args(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta:.4g}"

