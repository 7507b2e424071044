r"""Simulating one layer of one-spike neurons on its input spikes (functional and exact modes).

A layer is a linear synaptic map (dense :math:`W` or sparse :math:`\hat A`) followed by a neuron. Given the
input spikes, a bias (initial potential) and the output scale :math:`\lambda^l`:

* **functional** (or exact with :math:`T_w + 1 \ge T_{in}`, when every input phase has arrived before the first
  output phase): one ANN pass on the decoded input, then the round-off encoder. Exactly the quantised ANN.
* **exact** (:math:`T_w + 1 < T_{in}`): the partial pre-activation after input phase :math:`T_w + 1` comes from one
  pass over the spikes fired by then; every later input phase adds only its own spike events through the event
  kernel (spikes x fan-out), and the neuron fires at the first output phase whose prefix crosses its threshold
  (late and false spikes included).
* **output** layers do not spike: they integrate the whole input window (docs/method.md, A20) and return the potential.

Operation counts for the energy model are taken here: ANN MACs of the replaced layer, exact additions
(input spikes x fan-out) and spike counts.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .coding import PhaseCode, _check_finite, encode_counted, saturated_count
from .energy import LayerStats
from .kernels.scatter import DenseSynapses, GraphSynapses, accumulate_events
from .neuron import one_spike_fire
from .operators import Dense, ValueOp
from .spikes import IdentitySpikes, PhaseSpikes, SparsePhaseSpikes, SpikeInput

__all__ = ["Mode", "DenseOp", "GraphOp", "run_layer", "check_mode"]

Mode = Literal["functional", "exact"]


def check_mode(mode: str) -> str:
    if mode not in ("functional", "exact"):
        raise ValueError(f"mode must be 'functional' or 'exact', got {mode!r}")
    return mode


class DenseOp:
    """``y = x W^T`` per node (message passing). ``weight`` is ``[out, in]`` as in ``torch.nn.Linear``."""

    def __init__(self, weight: Tensor):
        self.weight = weight
        self.synapses = DenseSynapses(weight.t())

    def apply(self, inp: SpikeInput, k: int, dtype: torch.dtype) -> Tensor:
        if isinstance(inp, IdentitySpikes):
            if self.weight.shape[1] != inp.num_nodes:
                raise ValueError(
                    f"featureless input X = I has {inp.num_nodes} nodes but the layer has "
                    f"{self.weight.shape[1]} input channels"
                )
            return self.weight.t().to(dtype)  # I W^T: node n's single spike loads row n of W^T
        x = inp.values_upto(k, dtype)
        if x.layout != torch.strided:
            return torch.sparse.mm(x, self.weight.t().to(dtype))
        return Dense(self.weight).forward([x])  # x W^T (into a buffer advised for huge pages on the CPU)

    def macs(self, inp: SpikeInput) -> float:
        if isinstance(inp, IdentitySpikes):  # sparse X with nnz = N (docs/method.md, section 11.3)
            return float(inp.num_nodes * self.weight.shape[0])
        if isinstance(inp, SparsePhaseSpikes):  # (A-hat I) W: one MAC per non-zero and output feature
            return float(inp.phase.numel() * self.weight.shape[0])
        return float(inp.shape[0] * self.weight.shape[1] * self.weight.shape[0])

    def additions(self, counts: Tensor) -> float:
        return float(counts.sum()) * self.weight.shape[0]

    def exact_kernel(self, inp: SpikeInput, code: PhaseCode, bias: Tensor | None, scale_t: Tensor, signed: bool,
                     dtype: torch.dtype, backend: str, early) -> tuple[Tensor, Tensor | None, float, int, None] | None:
        """Exact mode as one matmul of the early spikes plus late spikes x fan-out on the compiled kernel of the
        CNN layers (``x W^T`` is a 1 x 1 convolution of a 1 x 1 map), where it serves the layer, else ``None``.
        The late bins stay in ANN units and are divided by lambda, as on the event path, so the spikes are the
        same."""
        if isinstance(inp, PhaseSpikes):  # one-spike inputs, or the binary input encoder's bits
            data, ok = inp.phase, inp.phase.dtype == torch.int8
        else:
            data = getattr(inp, "bits", None)
            ok = data is not None and data.dtype in (torch.int32, torch.int64)
        if not ok or data.dim() != 2 or data.device.type != "cpu" or code.phase_dtype != torch.int8:
            return None
        from .kernels import conv_cpu, fused_cpu

        if not fused_cpu.available(backend):
            return None
        first = early()
        form = (self.weight.detach().t()[None, None], (1, 1), (0, 0), (1, 1))
        fast = conv_cpu.fire_late(first, [inp], [form], [0], early.k0, inp.T_in, code.Tw,
                                  code.thresholds(dtype, first.device), in_scales=[inp.scale],
                                  div=None if early.normalized else scale_t,
                                  signed=signed)
        return None if fast is None else (fast[0], fast[1], float(fast[2]), fast[3], None)


class GraphOp:
    r"""``y = \hat A x`` per feature channel (aggregation). ``adj`` is a torch sparse CSR ``[target, source]``."""

    def __init__(self, adj: Tensor, synapses: GraphSynapses | None = None):
        self.adj = adj
        self._synapses = synapses
        self._fanout: Tensor | None = None

    @property
    def synapses(self) -> GraphSynapses:
        """Source-major copy of the synapses, built on first use: only the event path needs it."""
        if self._synapses is None:
            crow, col = self.adj.crow_indices().long(), self.adj.col_indices().long()
            dst = torch.repeat_interleave(torch.arange(self.adj.shape[0], device=crow.device), crow[1:] - crow[:-1])
            self._synapses = GraphSynapses.from_edge_index(torch.stack([col, dst]), self.adj.values(),
                                                           self.adj.shape[1])
        return self._synapses

    @property
    def fanout(self) -> Tensor:
        # a spike of source n reaches every target m with A[m, n] != 0: the column counts of A
        if self._fanout is None:
            self._fanout = (self._synapses.fanout if self._synapses is not None else
                            torch.bincount(self.adj.col_indices().long(), minlength=self.adj.shape[1]))
        return self._fanout

    def apply(self, inp: SpikeInput, k: int, dtype: torch.dtype) -> Tensor:
        if isinstance(inp, IdentitySpikes):
            raise ValueError("aggregating the featureless identity input gives the sparse layer A-hat itself: "
                             "use SpikingAggregation.forward, which codes it as SparsePhaseSpikes")
        x = inp.values_upto(k, dtype)
        adj = self.adj if self.adj.dtype == dtype else self.adj.to(dtype)
        if adj.device.type == "cpu" and adj.layout == torch.sparse_csr:
            return torch.sparse.mm(adj, x, "sum")  # torch's parallel CSR kernel: ~20% faster than the default
        return torch.sparse.mm(adj, x)

    def macs(self, inp: SpikeInput) -> float:
        return float(self.adj._nnz() * inp.shape[1])

    def exact_kernel(self, inp: SpikeInput, code: PhaseCode, bias: Tensor | None, scale_t: Tensor, signed: bool,
                     dtype: torch.dtype, backend: str, early) -> tuple[Tensor, Tensor | None, None, None, None] | None:
        """Exact mode on the fused CPU or the Triton aggregation kernel where one serves the layer (they form the
        early potential themselves), else ``None``."""
        if _use_fused(inp, self, code, dtype, backend):
            from .kernels import fused_cpu

            phase, sign = fused_cpu.aggregate_exact(self.adj, inp, bias, scale_t, code.thresholds(torch.float32),
                                                    inp.T_in, code.Tw, signed)
            return phase, sign, None, None, None  # the kernels never form the full potential: saturation not counted
        if _use_triton(inp, self, code, dtype, backend):
            from .kernels import triton_exact

            adj = self.adj if self.adj.dtype == dtype else self.adj.to(dtype)
            phase, sign = triton_exact.aggregate_exact(adj, inp, bias, scale_t, code.thresholds(dtype, adj.device),
                                                       inp.T_in, code.Tw, signed)
            return phase, sign, None, None, None
        return None

    def additions(self, counts: Tensor) -> float:
        # a spike of node n reaches deg(n) + 1 targets (its column of A-hat)
        per_node = counts.sum(1) if counts.dim() > 1 else counts
        return float((per_node.to(torch.float64) * self.fanout.to(torch.float64)).sum())


def _use_fused(inp, op: "GraphOp", code: PhaseCode, dtype, backend: str) -> bool:
    """The fused CPU aggregation kernel serves exact graph layers fed by one-spike neurons."""
    if dtype != torch.float32:
        return False
    if not isinstance(inp, PhaseSpikes) or inp.phase.dim() != 2 or inp.phase.dtype != torch.int8:
        return False
    if code.phase_dtype != torch.int8:  # the kernel writes int8 output phases
        return False
    if op.adj.device.type != "cpu" or op.adj.layout != torch.sparse_csr:
        return False
    from .kernels import fused_cpu

    return fused_cpu.available(backend)


def _use_triton(inp, op: "GraphOp", code: PhaseCode, dtype, backend: str) -> bool:
    """The Triton aggregation kernel serves exact graph layers fed by one-spike neurons on CUDA (or wherever
    ``backend="triton"`` asks for it: CPU tensors under ``TRITON_INTERPRET=1``)."""
    if backend not in ("auto", "triton"):
        return False
    if dtype not in (torch.float32, torch.float64) or code.phase_dtype != torch.int8:
        return False
    if not isinstance(inp, PhaseSpikes) or inp.phase.dim() != 2 or inp.phase.dtype != torch.int8:
        return False
    if op.adj.layout != torch.sparse_csr or (backend == "auto" and op.adj.device.type != "cuda"):
        return False
    from .kernels import triton_exact

    ok = triton_exact.available(op.adj.device)
    if backend == "triton" and not ok:
        raise RuntimeError(f"backend='triton' requested but the Triton kernel cannot run on {op.adj.device} here "
                           f"(install spikegcn[gpu] for CUDA; CPU tensors need TRITON_INTERPRET=1)")
    return ok


def _compute_dtype(scale, bias: Tensor | None) -> torch.dtype:
    """The layer's dtype: that of its scale buffer (or bias), so a float64 model computes in float64."""
    for t in (scale, bias):
        if isinstance(t, Tensor) and t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _input_stats(inp: SpikeInput, op, name: str, dtype: torch.dtype) -> LayerStats:
    counts = inp.spike_counts()
    macs, additions = op.stats(inp, dtype) if isinstance(op, ValueOp) else (op.macs(inp), op.additions(counts))
    return LayerStats(name=name, macs=macs, in_neurons=int(counts.numel()), in_spikes=float(counts.sum()),
                      additions=additions)


def _potential(inp: SpikeInput, op, k: int, dtype: torch.dtype, bias: Tensor | None) -> Tensor:
    """Pre-activation (ANN units) from the input phases ``1..k``, bias included."""
    z = op.apply(inp, k, dtype)
    if bias is not None:
        z = z + bias.to(dtype)
    return z


def _fire_closed_form(inp: SpikeInput, op, code: PhaseCode, bias: Tensor | None, scale_t: Tensor, signed: bool,
                      dtype: torch.dtype, stats: LayerStats, collect_stats: bool, normalized: bool
                      ) -> tuple[Tensor, Tensor | None, int | None, Tensor | None, Tensor | None]:
    """Functional mode (or a full wait): one ANN pass on the decoded input, then the round-off encoder (which also
    counts the saturated and the fired neurons in its pass on the compiled path); an operator with
    ``fire_closed_form`` (the CNN layers) fuses its last additions, the encoder, the output's decoding and its
    spike counts per position into one compiled pass. -> ``(phase, sign, fired, the output's normalised values or
    None, the spikes per position or None)``."""
    fused = getattr(op, "fire_closed_form", None) if normalized and bias is None else None
    fast = fused(inp, code, signed, dtype, collect_stats) if fused is not None else None
    if fast is not None:
        phase, sign, saturated, fired, values, counts = fast
        stats.saturated_neurons = float(saturated) if collect_stats else None
        return phase, sign, (fired if collect_stats else None), values, counts
    z = _potential(inp, op, inp.T_in, dtype, bias)
    if not normalized:
        z = z / scale_t.to(z.device)
    phase, sign, saturated, fired = encode_counted(z, code, signed=signed, count=collect_stats)
    stats.saturated_neurons = float(saturated) if saturated is not None else None
    return phase, sign, fired, None, None


def _fire_kernel(inp: SpikeInput, op, code: PhaseCode, bias: Tensor | None, scale_t: Tensor, signed: bool,
                 dtype: torch.dtype, backend: str, stepped: bool, early: "_Early"
                 ) -> tuple[Tensor, Tensor | None, float | None, int | None, Tensor | None] | None:
    """Exact mode on a compiled kernel where the operator brings one that serves the layer, else ``None``:
    ``(phase, sign, saturated neurons or None, fired neurons or None, spikes per position or None)``."""
    if stepped:
        return None
    kernel = getattr(op, "exact_kernel", None)
    if kernel is None:
        return _fire_bins(inp, op, code, early, scale_t, signed, dtype, backend)
    return kernel(inp, code, bias, scale_t, signed, dtype, backend, early)


_BINS_ROWS = 4096  # output rows per block of late bins: bounds their memory (rows x late phases x channels)


def _fire_bins(inp: SpikeInput, op, code: PhaseCode, early: "_Early", scale_t: Tensor, signed: bool,
               dtype: torch.dtype, backend: str) -> tuple[Tensor, Tensor | None, float, int, None] | None:
    """Exact mode for a composite operator on the compiled neurons: all late phases' contributions at once
    (:func:`spikegcn.late_bins.late_bins`, a block of rows at a time) and the neurons stepping over them in C++,
    with the event path's additions in its order, so the same spikes. ``None`` where it cannot run."""
    from .kernels import fused_cpu
    from .late_bins import late_bins, supports_bins

    k0, T_in = early.k0, inp.T_in
    if (not isinstance(op, ValueOp) or dtype != torch.float32 or backend not in ("auto", "fused") or k0 >= T_in
            or not supports_bins(op, inp) or not fused_cpu.available(backend)):
        return None
    first = early()
    if first.dim() != 2 or first.device.type != "cpu" or first.dtype != torch.float32:
        return None
    mod = fused_cpu.load()
    N, C = first.shape
    div = (first.new_empty(0) if early.normalized else
           scale_t.to(torch.float32).reshape(-1).expand(C).contiguous())
    thr, isa = code.thresholds(torch.float32).contiguous(), fused_cpu._ISA[fused_cpu.max_isa()]
    phase = torch.empty((N, C), dtype=torch.int8, device=first.device)
    sign = torch.empty((N, C), dtype=torch.int8, device=first.device) if signed else None
    cache: dict = {}
    sat = fired = 0
    for lo in range(0, N, _BINS_ROWS):
        hi = min(N, lo + _BINS_ROWS)
        bins = late_bins(op, inp, k0, dtype, cache, lo, hi).contiguous()
        ph, sg, s, bad, f = mod.fire_bins(first[lo:hi].contiguous(), bins, div, thr, code.Tw, k0, T_in, signed, isa)
        if int(bad):
            _check_finite(first, "neuron input")
        phase[lo:hi] = ph
        if sign is not None:
            sign[lo:hi] = sg
        sat, fired = sat + int(s), fired + int(f)
    return phase, sign, float(sat), fired, None


class _Early:
    """The normalised potential from the input phases ``1..k0`` (bias included), computed once on first use: an
    operator's compiled kernel and the event path both start from it."""

    def __init__(self, inp: SpikeInput, op, k0: int, dtype: torch.dtype, bias: Tensor | None, scale_t: Tensor,
                 normalized: bool):
        self.args = (inp, op, k0, dtype, bias)
        self.scale_t, self.normalized, self.k0 = scale_t, normalized, k0
        self._value: Tensor | None = None

    def __call__(self) -> Tensor:
        if self._value is None:
            z = _potential(*self.args)
            self._value = z if self.normalized else z / self.scale_t.to(z.device)
        return self._value


def _fire_events(inp: SpikeInput, op, code: PhaseCode, early: _Early, scale_t: Tensor, signed: bool,
                 dtype: torch.dtype, backend: str, stats: LayerStats, normalized: bool
                 ) -> tuple[Tensor, Tensor | None]:
    """Exact mode on the event path: one pass over the phases fired by ``k0`` (``Tw + 1``, or 1 when stepped), then
    every later input phase adds its own spike events to the streaming neuron."""
    k0, first = early.k0, early()
    synapses = None if isinstance(op, ValueOp) else op.synapses
    decoded: dict = {}  # the composite operators' decoded inputs, for this layer's phases only
    scatter_backend = backend if backend in ("torch_scatter", "native") else "auto"

    def norm(z: Tensor) -> Tensor:
        return z if normalized else z / scale_t.to(z.device)

    def phase_input(p: int) -> Tensor | None:
        if p == 1:
            return first
        if p <= k0:
            return None
        if synapses is None:  # composite operators: linear maps of the values fired at p (or a gate)
            d = op.delta(inp, p, dtype, decoded)
            return None if d is None else norm(d)
        row, col, val = inp.events_at(p, dtype)
        if row.numel() == 0:
            return None
        buf = torch.zeros(first.shape, dtype=dtype, device=first.device)
        accumulate_events(row, col, val, synapses, buf, backend=scatter_backend)
        return norm(buf)

    def count_saturated(P: Tensor) -> None:
        stats.saturated_neurons = float(saturated_count(P, signed))

    return one_spike_fire(phase_input, code, T_in=inp.T_in, signed=signed, final_potential=count_saturated)


def run_layer(
    inp: SpikeInput,
    op: DenseOp | GraphOp | ValueOp,
    code: PhaseCode,
    bias: Tensor | None,
    scale: Tensor | float,
    signed: bool = False,
    mode: Mode = "exact",
    output: Literal["spikes", "potential"] = "spikes",
    name: str = "",
    start: int = 0,
    dtype: torch.dtype | None = None,
    backend: str = "auto",
    stepped: bool = False,
    collect_stats: bool = True,
    wait: int | None = None,
    normalized: bool = False,
    stats: LayerStats | None = None,
) -> tuple[PhaseSpikes | Tensor, LayerStats]:
    """Run one spiking layer.

    Args:
        inp: input spikes (a :class:`~spikegcn.operators.Streams` for several inputs).
        op: the synaptic map; one that has ``exact_kernel`` may run exact mode on a compiled kernel.
        code: the code the layer emits with (``T``, ``Q``, shift, ``Tw``).
        bias: bias (added to the potential before normalisation), or ``None``.
        scale: :math:`\\lambda^l` per output channel (or scalar), ANN units of a phase-1 output spike; shaped to
            broadcast against the output (``[C]`` channels last, ``[C, 1, 1]`` for feature maps).
        signed: signed one-spike neurons (no ReLU after this layer in the ANN).
        mode: ``"functional"`` or ``"exact"``.
        output: ``"spikes"`` for hidden layers, ``"potential"`` for the output layer (ANN units).
        dtype: compute dtype (default: the dtype of ``scale``, else of ``bias``).
        backend: exact mode with ``Tw + 1 < T_in``: ``"auto"`` (the operator's compiled kernel where it serves the
            layer, else the event path), ``"fused"``, ``"triton"``, or the event path's scatter backend
            (``"torch_scatter"``, ``"native"``).
        stepped: take every input phase after the first through the event path, even when ``Tw + 1 >= T_in``.
        collect_stats: count input spikes, operations and saturation (``False``: only the output counts).
        wait: the neuron's wait in input phases (default ``code.Tw``; a join whose streams opened at different
            phases waits for the oldest).
        normalized: ``op`` and ``bias`` give the potential in units of :math:`\\lambda^l` already (the CNN layers
            fold it into their weights, Eq. 2): no division by ``scale``.
        stats: the caller's record to fill (its input counts already taken) instead of a new one.

    Returns:
        ``(PhaseSpikes or potential, LayerStats)``.
    """
    check_mode(mode)
    dtype = dtype or _compute_dtype(scale, bias)
    if stats is None:
        stats = _input_stats(inp, op, name, dtype) if collect_stats else LayerStats(name, 0.0, 0, 0.0, 0.0)
    # the device of the layer's buffers (a plain float scale: that of the input)
    scale_t = torch.as_tensor(scale, dtype=dtype,
                              device=scale.device if isinstance(scale, Tensor) else inp.spike_counts().device)
    if output == "potential":
        z = _potential(inp, op, inp.T_in, dtype, bias)
        return (z * scale_t if normalized else z), stats
    if output != "spikes":
        raise ValueError(f"output must be 'spikes' or 'potential', got {output!r}")

    wait = code.Tw if wait is None else wait
    if mode == "functional" or (wait + 1 >= inp.T_in and not stepped):
        phase, sign, fired, values, counts = _fire_closed_form(inp, op, code, bias, scale_t, signed, dtype, stats,
                                                               collect_stats, normalized)
    else:
        fired, values, counts = None, None, None  # counted from the phases below
        fire_code = code if wait == code.Tw else code.replace(Tw=wait)
        early = _Early(inp, op, 1 if stepped else min(wait + 1, inp.T_in), dtype, bias, scale_t, normalized)
        from_kernel = _fire_kernel(inp, op, fire_code, bias, scale_t, signed, dtype, backend, stepped, early)
        if from_kernel is None:
            phase, sign = _fire_events(inp, op, fire_code, early, scale_t, signed, dtype, backend, stats,
                                       normalized)
        else:
            phase, sign, stats.saturated_neurons, fired, counts = from_kernel
    spikes = PhaseSpikes(phase=phase, code=code, scale=scale_t, sign=sign, start=start)
    if values is not None:
        spikes.keep_decoded(values)
    if counts is not None:
        spikes.keep_position_counts(counts)
    stats.out_neurons = phase.numel()
    stats.out_spikes = float(spikes.num_spikes() if fired is None else fired)
    return spikes, stats
