r"""Synaptic operators on decoded spike values: the building blocks of every PyG graph layer.

For a fixed graph every supported PyG layer is an affine map of its input(s), so a spiking layer is a small
composition of operators feeding one layer of one-spike neurons (:func:`spikegcn.simulate.run_layer`):

* :class:`Dense` ``x W^T`` per node (fan-out ``out_features``),
* :class:`Sparse` ``A x`` per channel for a sparse ``[target, source]`` matrix, signed entries allowed (GCN's
  :math:`\hat A`, mean/sum aggregation, GIN's :math:`A + (1+\epsilon)I`, ChebConv's scaled Laplacian, pooling
  matrices; fan-out of source ``n`` = the non-zeros of column ``n``),
* :class:`Chain` (composition), :class:`Join` (sum of several operators, each on its own input stream: skips,
  SAGE's root weight, GCN2Conv's initial residual) and :class:`Krylov` (polynomials of one sparse operator:
  SGConv, ChebConv, TAGConv, APPNP),
* :class:`MaxGate` (max over the in-neighbours of a target, or over the nodes of a graph) and
  :class:`ElementMax` (max over streams): not linear.

Every operator provides ``forward`` (the map on decoded values, one tensor per input stream) and ``cost`` (ANN
MACs of the map and the additions an event-driven run makes: for every stage, its non-zero inputs x their
fan-out; a composition is counted stage by stage).

**Exact mode** needs only linearity: the contribution of the spikes fired at input phase ``p`` is the operator
applied to the values fired at ``p`` alone (:meth:`ValueOp.delta`). A gate is not linear; its output after input
phase ``p`` is defined as the gate applied to everything that has arrived by ``p`` (the running max), so its
contribution at ``p`` is ``gate(prefix p) - gate(prefix p-1)``. For non-negative one-spike input (a ReLU layer)
the running max of a channel is the value of its earliest spike (a larger value fires earlier, lambda is per
channel), so the gate forwards the first spike and never revises it: the max of the ANN exactly. On signed input
the running max can fall (a neighbour still silent counts as 0 until it fires negative): the gate then sends a
negative correction; after the last input phase the result is again the ANN's max over the decoded values.

Several input streams of one neuron layer (:class:`Streams`) share one virtual phase axis: stream ``i``'s phase
``p`` is virtual phase ``p + offsets[i]``. The graph joins hold a stream from an earlier layer back (a delay line,
all offsets 0) until the latest one starts; a CNN layer lets an older stream (a residual shortcut) run ahead by the
phases its window opened earlier (:meth:`spikegcn.nn.conv.OneSpikeLayer.forward`).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .spikes import IdentitySpikes, PhaseSpikes

__all__ = ["Streams", "ValueOp", "Dense", "Sparse", "Identity", "Chain", "Join", "Krylov", "MaxGate",
           "ElementMax", "sparse_matrix"]


class Streams:
    """The input spike streams of one neuron layer with several inputs (a join); stream ``i`` is seen
    ``offsets[i]`` virtual phases late (default 0 for all)."""

    def __init__(self, items, offsets=None):
        self.items = tuple(items)
        self.offsets = tuple(int(o) for o in offsets) if offsets is not None else (0,) * len(self.items)
        if len(self.offsets) != len(self.items) or min(self.offsets, default=0) < 0:
            raise ValueError(f"Streams needs one non-negative offset per stream, got {offsets!r}")

    @property
    def T_in(self) -> int:
        """Virtual phases: the last phase of any stream, offsets included."""
        return max(i.T_in + o for i, o in zip(self.items, self.offsets))

    @property
    def shape(self) -> torch.Size:
        return self.items[0].shape

    @property
    def start(self) -> int:
        return max(getattr(i, "start", 0) for i in self.items)

    def spike_counts(self) -> Tensor:
        return torch.cat([i.spike_counts().reshape(-1) for i in self.items])


def _items(inp) -> tuple:
    return inp.items if isinstance(inp, Streams) else (inp,)


def _offsets(inp) -> tuple:
    return inp.offsets if isinstance(inp, Streams) else (0,)


def _values(item, k: int, dtype: torch.dtype, like: Tensor | None = None) -> Tensor:
    if isinstance(item, IdentitySpikes):  # featureless X = I (one spike at phase 1), materialised (small graphs only)
        device = like.device if like is not None else item.device
        eye = torch.eye(item.num_nodes, dtype=dtype, device=device)
        return eye if k >= 1 else torch.zeros_like(eye)
    if k <= 0:
        return torch.zeros(item.shape, dtype=dtype, device=_device(item))
    v = item.values_upto(k, dtype)
    return v.to_dense() if v.layout != torch.strided else v


def _fired_at(item, q: int, dtype: torch.dtype, cache: dict) -> Tensor:
    """The values of the spikes fired at phase ``q`` exactly: bit for bit ``values_upto(q) - values_upto(q - 1)``
    (a spike fired earlier gives ``v - v = +0``, as ``where`` does). A one-spike input is decoded once; another input
    keeps its last prefix for the next phase; the latest phase's values serve every operator on that input. Entries
    are keyed by the input and checked against it (held by the entry), so a later input never reads a stale one."""
    fired = cache.get(("fired", dtype, id(item)))
    if fired is not None and fired[0] is item and fired[1] == q:
        return fired[2]
    if type(item) is PhaseSpikes and q >= 1:
        hit = cache.get(("decoded", dtype, id(item)))
        if hit is None or hit[0] is not item:
            hit = cache[("decoded", dtype, id(item))] = (item, _values(item, item.T_in, dtype))
        v = hit[1]
        out = torch.where(item.phase == q, v, torch.zeros((), dtype=v.dtype, device=v.device))
    else:
        prev = cache.pop(("prefix", dtype, id(item)), None)
        low = prev[2] if prev is not None and prev[0] is item and prev[1] == q - 1 else _values(item, q - 1, dtype)
        high = _values(item, q, dtype)
        cache[("prefix", dtype, id(item))] = (item, q, high)
        out = high - low
    cache[("fired", dtype, id(item))] = (item, q, out)
    return out


def _device(item) -> torch.device:
    t = getattr(item, "phase", None)
    return (t if t is not None else item.bits).device


class ValueOp:
    """An operator on the decoded values of one or more spike streams (see the module docstring)."""

    linear = True

    def forward(self, xs: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def cost(self, xs: list[Tensor]) -> tuple[float, float]:
        """``(ANN MACs, event additions)`` of one pass on ``xs``."""
        raise NotImplementedError

    # -- the interface run_layer drives
    def apply(self, inp, k: int, dtype: torch.dtype) -> Tensor:
        """The map applied to the values the input spikes carry up to input phase ``k``."""
        return self.forward([_values(i, k - o, dtype) for i, o in zip(_items(inp), _offsets(inp))])

    def delta(self, inp, p: int, dtype: torch.dtype, cache: dict | None = None) -> Tensor | None:
        """Contribution of the spikes fired at input phase ``p`` (``None``: nothing fired). ``cache``: a dict the
        caller keeps for one layer's phases, so that each input is decoded once, not twice per phase."""
        if self.linear:
            cache = {} if cache is None else cache
            xs = [_fired_at(i, p - o, dtype, cache) for i, o in zip(_items(inp), _offsets(inp))]
            if not any(bool(x.any()) for x in xs):
                return None
            return self.forward(xs)
        return self.apply(inp, p, dtype) - self.apply(inp, p - 1, dtype)

    def stats(self, inp, dtype: torch.dtype) -> tuple[float, float]:
        return self.cost([_values(i, inp.T_in, dtype) for i in _items(inp)])


def _nnz_rows(x: Tensor) -> Tensor:
    return (x != 0).sum(1) if x.dim() > 1 else (x != 0).to(torch.int64)


class Dense(ValueOp):
    """``y = x W^T`` (``weight``: ``[out, in]`` as in ``torch.nn.Linear``)."""

    def __init__(self, weight: Tensor):
        self.weight = weight

    def forward(self, xs):
        x, w = xs[0], self.weight.t().to(xs[0].dtype)
        if (x.dim() == 2 and x.layout == torch.strided and x.device.type == "cpu"
                and not (x.requires_grad or w.requires_grad)):
            from .kernels import fused_cpu

            # the same product (x @ w is mm for 2-D operands) into a buffer advised for huge pages
            return torch.mm(x, w, out=fused_cpu.empty((x.shape[0], w.shape[1]), x.dtype, x.device))
        return x @ w

    def cost(self, xs):
        x, (o, i) = xs[0], self.weight.shape
        return float(x.shape[0] * i * o), float((x != 0).sum()) * o


class Identity(ValueOp):
    """``y = x`` (a stream passed on unchanged, e.g. into a join)."""

    def forward(self, xs):
        return xs[0]

    def cost(self, xs):
        return 0.0, float((xs[0] != 0).sum())


def sparse_matrix(index: Tensor, value: Tensor | None, shape: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """CSR ``[target, source]`` matrix from ``index = [source; target]`` (PyG's edge_index); parallel entries add."""
    src, dst = index[0], index[1]
    w = torch.ones(src.numel(), dtype=dtype, device=src.device) if value is None else value.to(dtype)
    coo = torch.sparse_coo_tensor(torch.stack([dst, src]), w, shape, device=src.device,
                                  check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return coo.to_sparse_csr()


class Sparse(ValueOp):
    """``y = A x`` per channel for a sparse ``[target, source]`` matrix ``A`` (signed entries allowed)."""

    def __init__(self, adj: Tensor):
        self.adj = adj
        self._fanout: Tensor | None = None

    @property
    def fanout(self) -> Tensor:
        if self._fanout is None:  # a spike of source n reaches every target m with A[m, n] != 0
            self._fanout = torch.bincount(self.adj.col_indices().long(), minlength=self.adj.shape[1])
        return self._fanout

    def forward(self, xs):
        x = xs[0]
        adj = self.adj if self.adj.dtype == x.dtype else self.adj.to(x.dtype)
        return torch.sparse.mm(adj, x)

    def delta(self, inp, p: int, dtype: torch.dtype, cache: dict | None = None) -> Tensor | None:
        """One-spike int8 input on the CPU: every late phase's aggregation in one pass of the compiled kernel at the
        first late phase asked for (the same sums as ``A x`` of that phase's values, bit for bit), then one bin per
        phase. Only where the bins take at most twice the memory of the decoded input (a chunk of the layer-wise
        path; a whole graph aggregates phase by phase instead)."""
        if type(inp) is PhaseSpikes and dtype == torch.float32 and cache is not None:
            hit = cache.get(("bins", id(self), id(inp)))
            if hit is None or hit[0] is not inp:
                from .kernels import fused_cpu

                fits = self.adj.shape[0] * max(inp.T_in - p + 1, 0) <= max(2 * inp.phase.shape[0], 1 << 14)
                bins = fused_cpu.aggregate_bins(self.adj, inp, p - 1) if fits else None
                hit = cache[("bins", id(self), id(inp))] = (inp, p - 1, bins)
            _, k0, bins = hit
            if bins is not None and k0 < p <= inp.T_in:
                return bins[:, p - 1 - k0].contiguous()  # a dense map after it rounds as on a fresh tensor
        return super().delta(inp, p, dtype, cache)

    def cost(self, xs):
        x = xs[0]
        channels = x.shape[1] if x.dim() > 1 else 1
        adds = (_nnz_rows(x).to(torch.float64) * self.fanout.to(torch.float64)).sum()
        return float(self.adj._nnz() * channels), float(adds)


class Chain(ValueOp):
    """``y = op_n(... op_1(x))``."""

    def __init__(self, *ops: ValueOp):
        self.ops = ops
        self.linear = all(op.linear for op in ops)

    def forward(self, xs):
        for op in self.ops:
            xs = [op.forward(xs)]
        return xs[0]

    def delta(self, inp, p: int, dtype: torch.dtype, cache: dict | None = None) -> Tensor | None:
        if not self.linear:
            return super().delta(inp, p, dtype, cache)
        d = self.ops[0].delta(inp, p, dtype, cache)  # a linear chain maps its first operator's contribution on
        if d is None:
            return None
        for op in self.ops[1:]:
            d = op.forward([d])
        return d

    def cost(self, xs):
        macs = adds = 0.0
        for op in self.ops:
            m, a = op.cost(xs)
            macs, adds = macs + m, adds + a
            xs = [op.forward(xs)]
        return macs, adds


class Join(ValueOp):
    """``y = sum_i op_i(x_i)``: operator ``i`` on input stream ``i`` (several ops on one stream: repeat it)."""

    def __init__(self, *ops: ValueOp, inputs: tuple[int, ...] | None = None):
        self.ops = ops
        self.inputs = inputs if inputs is not None else tuple(range(len(ops)))
        self.linear = all(op.linear for op in ops)

    def forward(self, xs):
        out = None
        for op, i in zip(self.ops, self.inputs):
            y = op.forward([xs[i]])
            out = y if out is None else out + y
        return out

    def delta(self, inp, p: int, dtype: torch.dtype, cache: dict | None = None) -> Tensor | None:
        if not self.linear:
            return super().delta(inp, p, dtype, cache)
        cache = {} if cache is None else cache
        items, offsets = _items(inp), _offsets(inp)
        out = None
        for op, i in zip(self.ops, self.inputs):  # each operator on its own stream (nothing fired there: skipped)
            d = op.delta(items[i], p - offsets[i], dtype, cache)
            if d is not None:
                out = d if out is None else out + d
        return out

    def cost(self, xs):
        costs = [op.cost([xs[i]]) for op, i in zip(self.ops, self.inputs)]
        return sum(c[0] for c in costs), sum(c[1] for c in costs)


class Krylov(ValueOp):
    r"""Polynomials of one sparse operator ``A`` (terms :math:`t_0 = x`, ...):

    * ``"power"``: :math:`t_k = A t_{k-1}` (SGConv, TAGConv),
    * ``"cheb"``: :math:`t_1 = A x,\ t_k = 2 A t_{k-1} - t_{k-2}` (ChebConv; ``A`` the scaled Laplacian),
    * ``"appnp"``: :math:`t_k = (1-\alpha) A t_{k-1} + \alpha x` (APPNP: the teleport joins the input back).

    The result is :math:`\sum_k t_k W_k^\top` when ``weights`` are given, else :math:`t_K`.
    """

    def __init__(self, adj: Sparse, K: int, kind: str = "power", alpha: float = 0.0,
                 weights: list[Tensor] | None = None):
        if kind not in ("power", "cheb", "appnp"):
            raise ValueError(f"kind must be 'power', 'cheb' or 'appnp', got {kind!r}")
        self.adj, self.K, self.kind, self.alpha = adj, K, kind, alpha
        self.dense = [Dense(w) for w in weights] if weights is not None else None

    def _terms(self, x: Tensor, cost: list[float] | None = None):
        def hop(t: Tensor) -> Tensor:
            if cost is not None:
                m, a = self.adj.cost([t])
                cost[0], cost[1] = cost[0] + m, cost[1] + a
            return self.adj.forward([t])

        prev, cur = None, x
        yield cur
        for k in range(1, self.K + 1):
            if self.kind == "power":
                nxt = hop(cur)
            elif self.kind == "cheb":
                nxt = hop(cur) if k == 1 else 2.0 * hop(cur) - prev
            else:
                nxt = (1.0 - self.alpha) * hop(cur) + self.alpha * x
            prev, cur = cur, nxt
            yield cur

    def _run(self, x: Tensor, cost: list[float] | None):
        if self.dense is None:
            *_, last = self._terms(x, cost)
            return last
        out = None
        for t, d in zip(self._terms(x, cost), self.dense):
            if cost is not None:
                m, a = d.cost([t])
                cost[0], cost[1] = cost[0] + m, cost[1] + a
            y = d.forward([t])
            out = y if out is None else out + y
        return out

    def forward(self, xs):
        return self._run(xs[0], None)

    def cost(self, xs):
        c = [0.0, 0.0]
        self._run(xs[0], c)
        return c[0], c[1]


class MaxGate(ValueOp):
    """``y[m] = max_{n -> m} x[n]`` over the edges ``index = [source; target]`` (0 for a target without
    sources, as PyG's max aggregation); with ``index = [arange(N); batch]`` the max over each graph."""

    linear = False

    def __init__(self, index: Tensor, num_targets: int):
        self.index, self.num_targets = index, num_targets

    def forward(self, xs):
        x = xs[0]
        src, dst = self.index[0], self.index[1]
        out = torch.zeros((self.num_targets,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        idx = dst.view(-1, *([1] * (x.dim() - 1))).expand(-1, *x.shape[1:])
        return out.scatter_reduce(0, idx, x.index_select(0, src), "amax", include_self=False)

    def cost(self, xs):
        x = xs[0]
        fanout = torch.bincount(self.index[0], minlength=x.shape[0]).to(torch.float64)
        comps = float((_nnz_rows(x).to(torch.float64) * fanout).sum())
        return float(self.index.shape[1] * (x.shape[1] if x.dim() > 1 else 1)), comps


class ElementMax(ValueOp):
    """``y = max_i x_i`` element by element over several streams (JumpingKnowledge ``"max"``)."""

    linear = False

    def forward(self, xs):
        return torch.stack(xs, 0).amax(0)

    def cost(self, xs):
        return 0.0, float(sum((x != 0).sum() for x in xs))
