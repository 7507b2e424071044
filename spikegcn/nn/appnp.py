"""Spiking drop-in for torch_geometric.nn.APPNP."""
from __future__ import annotations

from torch import Tensor, nn

from ..operators import Krylov, ValueOp
from .graph_layer import SpikingGraphLayer, gcn_adjacency


class SpikingAPPNP(SpikingGraphLayer):
    r"""Personalized-PageRank propagation (Gasteiger et al.) as one layer of one-spike neurons.

    .. math::
        \mathbf{Z}^{(0)} = \hat{\mathbf{X}},\quad
        \mathbf{Z}^{(k)} = (1-\alpha)\hat{\mathbf{A}}\mathbf{Z}^{(k-1)} + \alpha\hat{\mathbf{X}},\quad
        \mathbf{X}' = \mathrm{Enc}(\mathbf{Z}^{(K)}/\boldsymbol\lambda)

    The teleport term joins the input stream back at every step; the ``K`` steps carry no neurons (none in the
    ANN), so the whole propagation is one polynomial operator ``Krylov(A-hat, K, "appnp", alpha)``.
    """

    def __init__(self, channels: int, K: int, alpha: float, add_self_loops: bool = True, normalize: bool = True,
                 **kwargs):
        super().__init__(channels, bias=False, **kwargs)
        self.K, self.alpha, self.add_self_loops, self.normalize = K, alpha, add_self_loops, normalize

    @classmethod
    def from_module(cls, conv: nn.Module, channels: int, **kwargs) -> "SpikingAPPNP":
        """From an ``APPNP`` (no weights; ``channels``: its feature width)."""
        return cls(channels, conv.K, conv.alpha, conv.add_self_loops, conv.normalize, **kwargs)

    def operator(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> ValueOp:
        adj = gcn_adjacency(edge_index, edge_weight, num_nodes, self.scale.dtype, self.add_self_loops,
                            normalize=self.normalize)
        return Krylov(adj, self.K, "appnp", alpha=self.alpha)

    def extra_repr_args(self) -> str:
        return f"K={self.K}, alpha={self.alpha}"
