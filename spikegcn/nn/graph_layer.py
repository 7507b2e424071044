r"""What the PyG-zoo spiking layers share: an operator built from the graph of each call, one neuron layer.

A subclass says which ``forward`` arguments carry spikes (``stream_args``) and builds its synaptic operator
(:mod:`spikegcn.operators`) from the graph arguments of the call in :meth:`SpikingGraphLayer.operator`; the
neurons (unsigned after a ReLU, signed where the ANN feeds a layer on without one, or an integrating output)
are the same for all (:func:`spikegcn.simulate.run_layer`). Nothing graph-specific is stored unless a layer
was built with ``cached=True``, so a converted model runs on any graph, batch or subgraph.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import scatter

from ..coding import PhaseCode
from ..operators import MaxGate, Sparse, Streams, ValueOp, sparse_matrix
from ..simulate import run_layer
from ..spikes import IdentitySpikes
from ..validate import check_edge_index, check_edge_weight
from .base import SpikingMixin, as_spike_input, set_scale

__all__ = ["SpikingGraphLayer", "aggregation_op", "gcn_adjacency", "checked_graph"]

AGGRS = ("add", "sum", "mean", "max")


def checked_graph(edge_index: Tensor, edge_weight: Tensor | None,
                  num_nodes: int) -> tuple[Tensor, Tensor | None]:
    """The checks of :mod:`spikegcn.validate` on a layer's graph arguments (O(E), switchable); a torch sparse
    adjacency (PyG's ``adj_t``, ``[target, source]``) becomes ``edge_index`` and its non-unit values weights."""
    check_edge_index(edge_index, num_nodes)
    if edge_index.layout != torch.strided:
        adj_t = edge_index.to_sparse_coo().coalesce()
        tgt, src = adj_t.indices()
        values = adj_t.values()
        return torch.stack([src, tgt]), (None if bool((values == 1).all()) else values)
    if edge_weight is not None:
        check_edge_weight(edge_weight, edge_index.shape[1])
    return edge_index, edge_weight


def aggregation_op(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int, aggr: str,
                   dtype: torch.dtype) -> ValueOp:
    r"""PyG's neighbour aggregation :math:`\square_{j \to i} e_{ji} x_j` (``source_to_target``) as an operator:
    ``"add"``/``"sum"``: :math:`A`; ``"mean"``: :math:`D_{in}^{-1} A` (weights summed, divided by the number
    of in-edges); ``"max"``: a first-spike gate (weights multiply the messages first, so none are allowed)."""
    if aggr not in AGGRS:
        raise ValueError(f"aggregation {aggr!r} is not a linear map or a max (supported: {AGGRS})")
    if aggr == "max":
        if edge_weight is not None:
            raise ValueError("max aggregation with edge weights is not supported (weight x spike is not a gate)")
        return MaxGate(edge_index, num_nodes)
    w = edge_weight
    if aggr == "mean":
        ones = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
        deg = scatter(ones, edge_index[1], 0, dim_size=num_nodes, reduce="sum")
        w = (ones if w is None else w.to(dtype)) / deg.index_select(0, edge_index[1])
    return Sparse(sparse_matrix(edge_index, w, (num_nodes, num_nodes), dtype))


def gcn_adjacency(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int, dtype: torch.dtype,
                  add_self_loops: bool = True, improved: bool = False, normalize: bool = True) -> Sparse:
    r"""GCN's :math:`\hat D^{-1/2}(A + I)\hat D^{-1/2}` via PyG's ``gcn_norm`` (or ``A`` as given)."""
    if normalize:
        edge_index, edge_weight = gcn_norm(edge_index, edge_weight, num_nodes, improved, add_self_loops,
                                           "source_to_target", dtype)
    return Sparse(sparse_matrix(edge_index, edge_weight, (num_nodes, num_nodes), dtype))


def glorot_weight(out_channels: int, in_channels: int) -> nn.Parameter:
    w = nn.Parameter(torch.empty(out_channels, in_channels))
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    return w


class SpikingGraphLayer(nn.Module, SpikingMixin):
    """Base of the spiking PyG layers: ``operator`` (from the call's graph) -> one-spike neurons.

    Args:
        channels (int): output channels (one lambda and bias entry each).
        bias (bool): learnable bias (initial potential).
        code, signed, mode, output, backend: see :class:`~spikegcn.nn.SpikingLinear`.
    """

    stream_args: tuple[str, ...] = ("x",)

    def __init__(self, channels: int, bias: bool = False, code: PhaseCode | None = None, signed: bool = False,
                 mode: str = "exact", output: str = "spikes", backend: str = "auto"):
        super().__init__()
        self._init_spiking(code or PhaseCode(16, 1.3), mode, output, backend)
        self.channels, self.signed = channels, signed
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.register_buffer("scale", torch.ones(channels))

    def reset_parameters(self) -> None:
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        for _, w in self._weights():
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # as torch.nn.Linear
        self.scale.fill_(1.0)

    def _weights(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n.startswith("weight")]

    @torch.no_grad()
    def copy_weights(self, weights: list[Tensor], bias: Tensor | None = None) -> "SpikingGraphLayer":
        """Copy trained ``[out, in]`` weights (in the order the layer declares them) and the bias."""
        for (_, p), w in zip(self._weights(), weights):
            p.copy_(w)
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias)
        return self

    @torch.no_grad()
    def set_scale(self, value: Tensor | float) -> None:
        set_scale(self.scale, value)

    def spike_input(self, x, like: Tensor):
        """Spikes as they are; ``None`` or a sparse identity: featureless X = I over the input channels."""
        if x is None:
            return IdentitySpikes(getattr(self, "in_channels", self.channels), device=like.device)
        return as_spike_input(x)

    def operator(self, *args, num_nodes: int) -> ValueOp:
        raise NotImplementedError

    def run(self, streams: list, op: ValueOp):
        """One neuron layer on the input ``streams`` through ``op``."""
        inp = streams[0] if len(streams) == 1 else Streams(streams)
        start = max(getattr(s, "start", 0) for s in streams) + self.code.Tw
        out, st = run_layer(inp, op, self.code, self.bias, self.scale, signed=self.signed, mode=self.mode,
                            output=self.output, name=self._get_name(), start=start, dtype=self.scale.dtype,
                            backend=self.backend)
        self.stats = [st]
        return out

    @torch.no_grad()
    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None = None):
        inp = self.spike_input(x, edge_index)
        n = inp.shape[0]
        edge_index, edge_weight = checked_graph(edge_index, edge_weight, n)
        return self.run([inp], self.operator(edge_index, edge_weight, num_nodes=n))

    def extra_repr_args(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr_args()
        return (f"{self.__class__.__name__}({self.channels}{', ' + extra if extra else ''}, "
                f"signed={self.signed}, {self._spiking_repr()})")
