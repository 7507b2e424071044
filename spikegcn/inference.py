r"""Layer-wise, bounded-memory inference of converted graph models (PyG's ``BasicGNN.inference``, spiking).

A converted model that is a **chain** of graph layers (each layer's spikes feed only the next one) is run one
layer at a time over chunks of target nodes. Between layers only one int8 code per neuron is kept,
:math:`c = \mathrm{sign} \cdot \mathrm{phase}` (a quarter of a float32 activation), optionally in a
memory-mapped file (``storage``), so the working set is one layer's codes plus one chunk:

* a **row-local** operator (dense ``x W^T``) needs the input codes of the chunk's own rows;
* a **sparse** operator (:math:`\hat A x`, mean aggregation) needs the codes of the chunk rows' in-neighbours:
  the CSR rows of the chunk name them (the *sources*), its columns are renumbered onto them.

Every chunk goes through the same engine (:func:`spikegcn.simulate.run_layer`) as the whole-graph forward, with
each target row summed in the same order, so the output is bit-identical in functional and exact modes. Dense
kernels pick a different summation path for very few rows, so no chunk is smaller than :data:`MIN_ROWS` rows.

The interface a layer must satisfy (:func:`layer_steps`): it is one or more neuron layers, each an operator over
the whole graph (targets x sources) plus the neuron parameters of a module (``code``, ``bias``, ``scale``,
``signed``, ``mode``, ``output``, ``backend``). Operators are restricted to a block of rows by :func:`sources`
and :func:`restrict`. Anything else (skips, joins of several layers, jumping knowledge, multi-hop operators,
max gates) is refused with an error naming the layer.
"""
from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .conversion.graph import UnsupportedModuleError
from .kernels import fused_cpu
from .nn.aggregation import SpikingAggregation
from .nn.encoder import PhaseEncoder
from .nn.gcn_conv import SpikingGCNConv
from .nn.linear import SpikingLinear
from .operators import Chain, Dense, Identity, Join, Sparse, ValueOp
from .simulate import DenseOp, GraphOp, run_layer
from .spikes import PhaseSpikes
from .validate import check_edge_index, check_edge_weight

__all__ = ["MIN_ROWS", "NotAChainError", "Step", "GraphChain", "layer_steps", "sources", "restrict", "chunks",
           "run_chain", "layerwise", "pack_codes", "unpack_codes"]

MIN_ROWS = 64
"""Smallest block of rows a dense map is run on (BLAS switches kernels, and summation order, below ~16 rows)."""

_ROWWISE_FUNCS = {F.log_softmax: "log_softmax", F.softmax: "softmax", torch.log_softmax: "log_softmax",
                  torch.softmax: "softmax", torch.sigmoid: "sigmoid", torch.tanh: "tanh"}
_ROWWISE_METHODS = ("log_softmax", "softmax", "sigmoid", "tanh")


class NotAChainError(UnsupportedModuleError):
    """The converted model is not a chain of graph layers that layer-wise inference can run row block by block."""


class Rows(ValueOp):
    """``y = x[index]``: the chunk's own rows among its sources (feeds a row-local map in a join)."""

    def __init__(self, index: Tensor):
        self.index = index

    def forward(self, xs):
        return xs[0].index_select(0, self.index)

    def cost(self, xs):
        return 0.0, 0.0


@dataclass
class Step:
    """One neuron layer: ``op`` over the whole graph (rows = targets, columns = global source ids) and the
    module holding its neuron parameters."""

    name: str
    layer: nn.Module
    op: object

    @property
    def row_local(self) -> bool:
        return _row_local(self.op)

    def run(self, inp, op):
        m = self.layer
        out, _ = run_layer(inp, op, m.code, m.bias, m.scale, signed=m.signed, mode=m.mode, output=m.output,
                           name=self.name, dtype=m.scale.dtype, backend=m.backend, collect_stats=False)
        return out


# ---------------------------------------------------------------- operators restricted to a block of rows
def _row_local(op) -> bool:
    if isinstance(op, (DenseOp, Dense, Identity, Rows)):
        return True
    if isinstance(op, (Chain, Join)):
        return all(_row_local(o) for o in op.ops)
    return False


def _check_op(op, name: str) -> None:
    """Refuse operators that are not row-local, one sparse hop, or chains/joins of those on one stream."""
    if _row_local(op) or isinstance(op, (GraphOp, Sparse)):
        return
    if isinstance(op, Chain) and sum(not _row_local(o) for o in op.ops) == 1:
        return _check_op(next(o for o in op.ops if not _row_local(o)), name)
    if isinstance(op, Join) and all(i == 0 for i in op.inputs):
        for o in op.ops:
            _check_op(o, name)
        return
    raise NotAChainError(f"layer {name}: operator {type(op).__name__} is not a single sparse hop on one input "
                         f"stream; layer-wise inference supports dense maps, one sparse aggregation and their "
                         f"chains/joins (use the whole-graph forward)")


def sources(op, lo: int, hi: int) -> Tensor | None:
    """Sorted global ids of the input rows that target rows ``lo..hi-1`` of ``op`` read (``None``: only
    their own rows)."""
    if _row_local(op):
        return None
    if isinstance(op, (GraphOp, Sparse)):
        adj = op.adj
        crow, col = adj.crow_indices(), adj.col_indices()
        seen = torch.zeros(adj.shape[1], dtype=torch.bool, device=col.device)
        seen[col[int(crow[lo]):int(crow[hi])]] = True  # O(E_chunk + N): no sort
        return seen.nonzero().squeeze(1)
    if isinstance(op, Chain):
        return sources(next(o for o in op.ops if not _row_local(o)), lo, hi)
    parts = [sources(o, lo, hi) for o in op.ops]  # a Join on one stream
    own = torch.arange(lo, hi, device=next(p for p in parts if p is not None).device)
    return torch.cat([own if p is None else p for p in parts]).unique()


def restrict(op, lo: int, hi: int, src: Tensor | None):
    """``op`` for target rows ``lo..hi-1`` reading the input rows ``src`` (global ids from :func:`sources`)."""
    if src is None:
        return op
    if _row_local(op):
        own = torch.arange(lo, hi, device=src.device)
        return Chain(Rows(torch.searchsorted(src, own)), op)
    if isinstance(op, (GraphOp, Sparse)):
        adj = op.adj
        crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
        a, b = int(crow[lo]), int(crow[hi])
        # the renumbering is monotone (src is sorted): every row keeps its summation order
        pos = torch.empty(adj.shape[1], dtype=col.dtype, device=col.device)
        pos[src] = torch.arange(src.numel(), dtype=col.dtype, device=col.device)
        cols = pos[col[a:b]]
        sub = torch.sparse_csr_tensor(crow[lo:hi + 1] - crow[lo], cols, val[a:b], size=(hi - lo, src.numel()),
                                      device=col.device, check_invariants=False)
        return GraphOp(sub) if isinstance(op, GraphOp) else Sparse(sub)
    if isinstance(op, Chain):
        k = next(i for i, o in enumerate(op.ops) if not _row_local(o))
        # row-local maps before the hop run on the source rows, those after it on the targets
        return Chain(*op.ops[:k], restrict(op.ops[k], lo, hi, src), *op.ops[k + 1:])
    return Join(*(restrict(o, lo, hi, src) for o in op.ops), inputs=op.inputs)


class _SharedAdjacency:
    """Layers on one graph build equal sparse operators (at scale each is ~E x 8 bytes): keep one copy."""

    def __init__(self):
        self.seen: list = []

    @staticmethod
    def _same(a, b) -> bool:
        A, B = a.adj, b.adj
        return (type(a) is type(b) and A.layout == B.layout == torch.sparse_csr and A.shape == B.shape
                and A.dtype == B.dtype and A._nnz() == B._nnz() and torch.equal(A.crow_indices(), B.crow_indices())
                and torch.equal(A.col_indices(), B.col_indices()) and torch.equal(A.values(), B.values()))

    def __call__(self, op):
        if isinstance(op, (GraphOp, Sparse)):
            twin = next((s for s in self.seen if self._same(s, op)), None)
            if twin is None:
                self.seen.append(op)
            return twin or op
        if isinstance(op, (Chain, Join)):
            op.ops = tuple(self(o) for o in op.ops)
        return op


def chunks(lo: int, hi: int, size: int) -> Iterator[tuple[int, int]]:
    """Blocks of ``size`` rows over ``lo..hi-1``; a remainder under :data:`MIN_ROWS` joins the block before."""
    starts = list(range(lo, hi, size))
    if len(starts) > 1 and hi - starts[-1] < MIN_ROWS:
        starts.pop()
    for i, s in enumerate(starts):
        yield s, (starts[i + 1] if i + 1 < len(starts) else hi)


# ---------------------------------------------------------------- int8 codes
def pack_codes(spikes: PhaseSpikes) -> Tensor:
    """One integer per neuron: ``sign * phase`` (``phase`` for unsigned neurons)."""
    return spikes.phase if spikes.sign is None else spikes.phase * spikes.sign


def unpack_codes(codes: Tensor, like: PhaseSpikes) -> PhaseSpikes:
    sign = None if like.sign is None else torch.sign(codes)
    phase = codes if sign is None else codes.abs()
    return PhaseSpikes(phase=phase, code=like.code, scale=like.scale, sign=sign, start=like.start)


class CodeStore:
    """One layer's packed codes ``[N, C]`` in memory or in a memory-mapped file under ``storage``."""

    def __init__(self, num_rows: int, first: PhaseSpikes, storage: str | None, offset: int = 0):
        self.like, self.offset = first, offset
        shape = (num_rows, first.phase.shape[1])
        self.path = None
        if storage is None:
            self.data = torch.empty(shape, dtype=first.phase.dtype, device=first.phase.device)
        else:
            fd, self.path = tempfile.mkstemp(suffix=".codes", dir=storage)
            os.close(fd)
            np_dtype = torch.empty(0, dtype=first.phase.dtype, device="cpu").numpy().dtype
            self._mm = np.memmap(self.path, dtype=np_dtype, mode="w+", shape=shape)
            self.data = torch.from_numpy(self._mm)

    def write(self, lo: int, spikes: PhaseSpikes) -> None:
        self.data[lo - self.offset:lo - self.offset + spikes.phase.shape[0]] = pack_codes(spikes)

    def rows(self, ids: Tensor | slice) -> Tensor:
        if isinstance(ids, slice):
            return self.data[ids.start - self.offset:ids.stop - self.offset]
        return fused_cpu.index_rows(self.data, ids - self.offset)

    def spikes(self, ids: Tensor | slice) -> PhaseSpikes:
        return unpack_codes(self.rows(ids), self.like)

    def close(self) -> None:
        self.data = None
        if self.path is not None:
            self._mm = None
            os.remove(self.path)
            self.path = None


class FeatureSource:
    """Layer-1 input: the graph features encoded row block by row block (the encoder is element-wise)."""

    def __init__(self, x: Tensor, encoder: nn.Module):
        self.x, self.encoder = x, encoder

    def spikes(self, ids: Tensor | slice):
        rows = self.x[ids] if isinstance(ids, slice) else fused_cpu.index_rows(self.x, ids.to(torch.long))
        return self.encoder(rows)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- the chain of a converted model
def layer_steps(module: nn.Module, name: str, graph_args: dict, num_nodes: int) -> list[Step]:
    """The neuron layers of one converted graph layer, in order, with their whole-graph operators."""
    ei, ew = graph_args.get("edge_index"), graph_args.get("edge_weight")
    if isinstance(module, SpikingGCNConv):
        if module.variant == "agg_first":
            raise NotAChainError(f"layer {name}: the 'agg_first' GCN variant decides its neurons' sign from the "
                                 f"whole input; convert with variant='signed' for layer-wise inference")
        return [Step(f"{name}.lin", module.lin, DenseOp(module.lin.weight)),
                Step(f"{name}.aggr", module.aggr, module.aggr.graph_op(ei, ew, num_nodes))]
    if isinstance(module, SpikingLinear):
        return [Step(name, module, DenseOp(module.weight))]
    if isinstance(module, SpikingAggregation):
        return [Step(name, module, module.graph_op(ei, ew, num_nodes))]
    if hasattr(module, "operator") and tuple(getattr(module, "stream_args", ())) == ("x",):
        op = module.operator(ei, ew, num_nodes=num_nodes)
        _check_op(op, name)
        return [Step(name, module, op)]
    raise NotAChainError(f"layer {name} ({type(module).__name__}) has no per-row operator; layer-wise "
                         f"inference supports GCN, linear, aggregation and single-stream PyG-zoo layers")


@dataclass
class GraphChain:
    """A converted model as ``encoder -> stages -> row-wise tail``; a stage is one step that reads neighbours
    (or the first steps) followed by row-local steps, so only stage outputs are stored."""

    encoder: nn.Module
    stages: list[list[Step]]
    tail: list[Callable[[Tensor], Tensor]]
    num_nodes: int

    @classmethod
    def from_model(cls, snn: fx.GraphModule, x: Tensor, edge_index: Tensor,
                   edge_weight: Tensor | None = None) -> "GraphChain":
        if not isinstance(snn, fx.GraphModule):
            raise NotAChainError(f"layer-wise inference needs a converted graph model, got {type(snn).__name__}")
        if x is None or x.dim() != 2:
            raise ValueError("layer-wise inference needs node features x of shape [num_nodes, features] "
                             "(featureless X = I models: use the whole-graph forward)")
        n = x.shape[0]
        check_edge_index(edge_index, n)
        if edge_weight is not None:
            check_edge_weight(edge_weight, edge_index.shape[1])
        graph_args = {"edge_index": edge_index, "edge_weight": edge_weight}
        modules = dict(snn.named_modules())
        encoder, share = None, _SharedAdjacency()
        steps: list[Step] = []
        tail: list[Any] = []
        placeholders = {nd: nd.target for nd in snn.graph.nodes if nd.op == "placeholder"}
        cur = next((nd for nd in placeholders if nd.target == "x"), next(iter(placeholders), None))
        for node in snn.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                if node.args[0] is not cur:
                    raise NotAChainError("the model returns more than the last layer's output")
                break
            mod = modules.get(node.target) if node.op == "call_module" else None
            if cur is None or cur not in node.all_input_nodes:
                continue  # e.g. PyG's asserts on unused arguments; a layer fed by it is refused by _bind_graph
            if len(cur.users) != 1:
                raise NotAChainError(f"the output of {_describe(cur)} feeds several nodes (a skip or join): "
                                     f"layer-wise inference needs a chain of layers")
            if isinstance(mod, PhaseEncoder) and encoder is None and not steps:
                encoder = mod
            elif mod is not None and not tail and (hasattr(mod, "code") and hasattr(mod, "mode")):
                if node.args[0] is not cur:
                    raise NotAChainError(f"{_describe(node)} takes the previous layer's spikes in another argument")
                for step in layer_steps(mod, node.target, _bind_graph(mod, node, placeholders, graph_args), n):
                    step.op = share(step.op)  # before the next layer builds its own
                    steps.append(step)
            elif steps:
                tail.append(_rowwise(node))
            else:
                raise NotAChainError(f"{_describe(node)} before the first layer: layer-wise inference needs the "
                                     f"input encoder to feed the first layer directly")
            cur = node
        if encoder is None:
            raise NotAChainError("the model has no input encoder (featureless X = I): use the whole-graph forward")
        if not steps or steps[-1].layer.output != "potential":
            raise NotAChainError("the last layer of the chain must be the integrating output layer")
        return cls(encoder, _stages(steps), tail, n)

    def apply_tail(self, y: Tensor) -> Tensor:
        for f in self.tail:
            y = f(y)
        return y


def _describe(node: fx.Node) -> str:
    return f"{node.op} {getattr(node.target, '__name__', node.target)}"


def _bind_graph(mod: nn.Module, node: fx.Node, placeholders: dict, graph_args: dict) -> dict:
    """The graph arguments of a layer call: each must be the model's own ``edge_index``/``edge_weight`` input."""
    params = list(inspect.signature(mod.forward).parameters)
    bound = dict(zip(params, node.args), **node.kwargs)
    out = {}
    for key, val in list(bound.items())[1:]:
        if isinstance(val, fx.Node):
            name = placeholders.get(val)
            if name not in graph_args:
                raise NotAChainError(f"layer {node.target}: argument {key} comes from {_describe(val)}, not from "
                                     f"the model's edge_index/edge_weight input")
            out[key] = graph_args[name]
        elif val is not None:
            raise NotAChainError(f"layer {node.target}: constant argument {key}={val!r} is not supported")
    return out


def _rowwise(node: fx.Node) -> Callable[[Tensor], Tensor]:
    """A row-wise function after the output layer (log_softmax over classes and the like)."""
    if node.op == "call_function" and node.target in _ROWWISE_FUNCS:
        fn = node.target
    elif node.op == "call_method" and node.target in _ROWWISE_METHODS:
        name = node.target
        fn = lambda t, *a, **k: getattr(t, name)(*a, **k)  # noqa: E731
    else:
        raise NotAChainError(f"{_describe(node)} after the layers is not a row-wise function layer-wise "
                             f"inference can apply block by block")
    args, kwargs = node.args[1:], dict(node.kwargs)
    dim = kwargs.get("dim", args[0] if args else None)
    if _ROWWISE_FUNCS.get(fn, node.target) in ("log_softmax", "softmax") and dim not in (1, -1):
        raise NotAChainError(f"{_describe(node)} over dim={dim!r} is not row-wise")
    if any(isinstance(a, fx.Node) for a in list(args) + list(kwargs.values())):
        raise NotAChainError(f"{_describe(node)} takes another tensor")
    return lambda t: fn(t, *args, **kwargs)


def _stages(steps: list[Step]) -> list[list[Step]]:
    stages: list[list[Step]] = []
    for s in steps:
        if stages and s.row_local:
            stages[-1].append(s)
        else:
            stages.append([s])
    return stages


# ---------------------------------------------------------------- running the chain
def run_stage(stage: list[Step], source, lo: int, hi: int, chunk_size: int, sink: Callable, tick=None) -> None:
    """Run one stage on target rows ``lo..hi-1`` chunk by chunk; ``sink(lo, out)`` receives each chunk."""
    first = stage[0]
    for a, b in chunks(lo, hi, chunk_size):
        src = sources(first.op, a, b)
        h = first.run(source.spikes(slice(a, b) if src is None else src), restrict(first.op, a, b, src))
        for step in stage[1:]:
            h = step.run(h, step.op)
        sink(a, h)
        if tick is not None:
            tick()


def _check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or chunk_size < MIN_ROWS:
        raise ValueError(f"chunk_size must be an int >= {MIN_ROWS} (dense kernels sum differently on fewer rows), "
                         f"got {chunk_size!r}")
    return chunk_size


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="chunk")


class _Sink:
    """Where a stage's blocks go: packed codes for the next stage, or (last stage) the output rows."""

    def __init__(self, lo: int, hi: int, tail: Callable | None, storage: str | None):
        self.lo, self.hi, self.tail, self.storage = lo, hi, tail, storage
        self.store: CodeStore | None = None
        self.result: Tensor | None = None

    def __call__(self, a: int, h) -> None:
        if self.tail is None:
            if self.store is None:
                self.store = CodeStore(self.hi - self.lo, h, self.storage, offset=self.lo)
            self.store.write(a, h)
            return
        y = self.tail(h)
        if self.result is None:
            self.result = y.new_empty((self.hi - self.lo,) + tuple(y.shape[1:]))
        self.result[a - self.lo:a - self.lo + y.shape[0]] = y


@torch.no_grad()
def run_chain(chain: GraphChain, source, lo: int, hi: int, chunk_size: int, storage: str | os.PathLike | None = None,
              prepare: Callable | None = None, tick: Callable | None = None) -> Tensor:
    """Every stage of ``chain`` on target rows ``lo..hi-1``; ``prepare(k, stage, source)`` may replace a stage's
    input (the halo exchange of :mod:`spikegcn.distributed`). Codes under ``storage`` live in a temporary
    directory removed at the end, also on error."""
    tmp = None
    if storage is not None:
        os.makedirs(storage, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="spikegcn-codes-", dir=storage)
    sink = None
    try:
        for k, stage in enumerate(chain.stages):
            if prepare is not None:
                source = prepare(k, stage, source)
            sink = _Sink(lo, hi, chain.apply_tail if k == len(chain.stages) - 1 else None, tmp)
            run_stage(stage, source, lo, hi, chunk_size, sink, tick)
            source.close()
            source = sink.store
        return sink.result
    finally:
        for s in (source, getattr(sink, "store", None)):
            if s is not None:
                s.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@torch.no_grad()
def layerwise(snn: fx.GraphModule, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None,
              chunk_size: int = 65536, storage: str | os.PathLike | None = None,
              progress: bool = False) -> Tensor:
    """Run a converted chain of graph layers layer by layer over blocks of ``chunk_size`` target nodes.

    Args:
        snn: a converted graph model (:class:`~spikegcn.conversion.SpikingModel`).
        x: node features ``[N, F]`` (a tensor or one over a ``np.memmap``: only blocks of rows are read).
        edge_index, edge_weight: the graph, as for ``snn(x, edge_index)``.
        chunk_size: target nodes per block (>= :data:`MIN_ROWS`).
        storage: a directory for the memory-mapped int8 codes between layers (removed afterwards), or
            ``None`` to keep them in memory.
        progress: show a tqdm bar over the blocks.

    Returns:
        the model's output for every node, bit-identical to ``snn(x, edge_index)``.
    """
    chunk_size = _check_chunk_size(chunk_size)
    chain = GraphChain.from_model(snn, x, edge_index, edge_weight)
    n = chain.num_nodes
    bar = _progress(len(chain.stages) * len(list(chunks(0, n, chunk_size))), progress, "layer-wise inference")
    try:
        return run_chain(chain, FeatureSource(x, chain.encoder), 0, n, chunk_size, storage,
                         tick=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
