"""Spiking graph aggregation (A-hat X): one-spike neurons after a sparse, fixed synaptic map."""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from ..coding import PhaseCode, encode
from ..energy import LayerStats
from ..simulate import GraphOp, run_layer
from ..spikes import IdentitySpikes, PhaseSpikes, SparsePhaseSpikes
from ..validate import check_edge_index, check_edge_weight
from .base import SpikingMixin, as_spike_input


def build_graph_op(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int, dtype=torch.float32) -> GraphOp:
    """CSR ``[target, source]`` for the dense pass (the event kernel's source-major copy is made on demand)."""
    if edge_index.layout == torch.sparse_csr and edge_weight is None and edge_index.dtype == dtype:
        return GraphOp(edge_index)  # already A-hat as [target, source] CSR: use it as is
    if edge_index.layout != torch.strided:  # a torch sparse adjacency, PyG's adj_t convention [target, source]
        adj_t = edge_index.to_sparse_coo().coalesce()
        tgt, src = adj_t.indices()
        edge_index, edge_weight = torch.stack([src, tgt]), adj_t.values()
    src, dst = edge_index[0], edge_index[1]
    w = torch.ones(src.numel(), dtype=dtype, device=src.device) if edge_weight is None else edge_weight.to(dtype)
    key = dst * num_nodes + src
    key, perm = torch.sort(key)
    w_s = w[perm]
    # parallel edges are one synapse with the summed weight (what spmm over duplicates computes anyway)
    key, inv = torch.unique_consecutive(key, return_inverse=True)
    if key.numel() < w_s.numel():
        w_s = torch.zeros(key.numel(), dtype=w_s.dtype, device=w_s.device).index_add_(0, inv, w_s)
    dst_s, src_s = key // num_nodes, key % num_nodes
    crow = torch.zeros(num_nodes + 1, dtype=torch.int64, device=src.device)
    crow[1:] = torch.cumsum(torch.bincount(dst_s, minlength=num_nodes), 0)
    # int32 indices make CPU spmm 2-4x faster (docs/textgcn.md, section 4)
    idx_dtype = torch.int32 if src_s.numel() < 2**31 and num_nodes < 2**31 else torch.int64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        adj = torch.sparse_csr_tensor(crow.to(idx_dtype), src_s.to(idx_dtype), w_s, (num_nodes, num_nodes),
                                      device=src.device, check_invariants=False)
    return GraphOp(adj)


class SpikingAggregation(MessagePassing, SpikingMixin):
    r"""One-spike neurons after graph aggregation with :math:`\hat{\mathbf{A}}`, channel by channel.

    .. math::
        \mathbf{X}' = \mathrm{Enc}\!\left(\frac{\mathrm{ReLU}(\hat{\mathbf{A}}\hat{\mathbf{X}} + \mathbf{b})}
        {\boldsymbol\lambda}\right),
        \qquad \hat{\mathbf{A}} = \hat{\mathbf{D}}^{-1/2}(\mathbf{A} + \mathbf{I})\hat{\mathbf{D}}^{-1/2}

    (``normalize=True``, GCN normalisation via :func:`torch_geometric.nn.conv.gcn_conv.gcn_norm`; otherwise
    ``edge_weight`` as given). A spike of node :math:`n` reaches every node :math:`m` with
    :math:`\hat A_{mn} \ne 0` (fan-out :math:`\deg(n)+1`), so the cost is spikes x fan-out.

    Args:
        channels (int): feature channels (one scale and bias entry each).
        code (PhaseCode): output code. improved, cached, add_self_loops, normalize: as in ``GCNConv``.
        bias (bool): bias added after aggregation (initial potential).
        signed (bool): signed neurons instead of ReLU neurons.
        mode, output: see :class:`~spikegcn.nn.SpikingLinear`.
    """

    def __init__(self, channels: int, code: PhaseCode | None = None, improved: bool = False, cached: bool = False,
                 add_self_loops: bool = True, normalize: bool = True, bias: bool = False, signed: bool = False,
                 mode: str = "exact", output: str = "spikes", backend: str = "auto", **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        self._init_spiking(code or PhaseCode(16, 1.3), mode, output, backend)
        self.channels, self.improved, self.cached = channels, improved, cached
        self.add_self_loops, self.normalize, self.signed = add_self_loops, normalize, signed
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.register_buffer("scale", torch.ones(channels))
        self._cached_op: GraphOp | None = None

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.scale.fill_(1.0)
        self._cached_op = None

    def _apply(self, fn, recurse: bool = True):
        # .to() / .cuda() / .double() move parameters and buffers; the cached adjacency (a plain attribute, not
        # state) is dropped and rebuilt from the next edge_index on the new device and dtype
        self._cached_op = None
        return super()._apply(fn, recurse)

    def graph_op(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> GraphOp:
        if self._cached_op is not None:
            return self._cached_op
        # a negative or too large index would be read as another node's row and change the output silently
        check_edge_index(edge_index, num_nodes)
        if edge_index.layout == torch.strided:
            check_edge_weight(edge_weight, edge_index.shape[1])
        sparse_in = edge_index.layout != torch.strided  # PyG's adj_t: [target, source], flow already applied
        if sparse_in and self.normalize:
            adj_t = edge_index.to_sparse_coo().coalesce()
            tgt, src = adj_t.indices()
            edge_index, edge_weight = torch.stack([src, tgt]), adj_t.values()
        elif not sparse_in and self.flow != "source_to_target":
            edge_index = edge_index.flip(0)
        if self.normalize:
            edge_index, edge_weight = gcn_norm(edge_index, edge_weight, num_nodes, self.improved,
                                               self.add_self_loops, "source_to_target", dtype=self.scale.dtype)
        op = build_graph_op(edge_index, edge_weight, num_nodes, dtype=self.scale.dtype)
        if self.cached:
            self._cached_op = op
        return op

    @torch.no_grad()
    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None = None,
                start: int = 0) -> PhaseSpikes | SparsePhaseSpikes | Tensor:
        inp = as_spike_input(x, self.channels)
        op = self.graph_op(edge_index, edge_weight, inp.shape[0])
        if isinstance(inp, IdentitySpikes):
            out = self._aggregate_identity(op, start)
            return out
        out, st = run_layer(inp, op, self.code, self.bias, self.scale, signed=self.signed, mode=self.mode,
                            output=self.output, name=self._get_name(), start=start, backend=self.backend)
        self.stats = [st]
        return out

    def _aggregate_identity(self, op: GraphOp, start: int) -> SparsePhaseSpikes:
        # A-hat I = A-hat: one neuron per non-zero A[m, n] (channel n), its whole input at phase 1, so the
        # round-off encoding is exact in every mode; all other neurons of the N x N layer never fire
        if self.output != "spikes" or self.signed or self.bias is not None:
            raise ValueError("aggregating featureless input supports hidden, unsigned, bias-free neurons only")
        adj = op.adj
        crow, col = adj.crow_indices().long(), adj.col_indices().long()
        n = adj.shape[0]
        row = torch.repeat_interleave(torch.arange(n, device=crow.device), crow[1:] - crow[:-1])
        scale = self.scale
        phase, _ = encode(adj.values() / (scale.index_select(0, col) if scale.dim() else scale), self.code)
        out = SparsePhaseSpikes(row=row, col=col, phase=phase, code=self.code, size=(n, n), scale=scale, start=start)
        fanout = op.fanout.to(torch.float64)
        self.stats = [LayerStats(name=self._get_name(), macs=float(adj._nnz()), in_neurons=n, in_spikes=float(n),
                                 additions=float(fanout.sum()), out_neurons=int(phase.numel()),
                                 out_spikes=float(out.num_spikes()))]
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, signed={self.signed}, {self._spiking_repr()})"
