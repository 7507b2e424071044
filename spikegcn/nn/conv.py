r"""One-spike neuron layers for CNNs: the shared neuron core and a 2-D convolution (the fully-connected head layer
and the flatten before it are in :mod:`spikegcn.nn.fc`).

A CNN neuron layer :math:`l` works in **normalised units**: it reads the normalised values
:math:`\hat a^{l-1} \in \{0\} \cup \{\pm v_p\}` its input spikes carry (no :math:`\lambda`) and holds the
normalised weights of Eq. 2 with BatchNorm folded in (docs/method.md, A11),

.. math::
    \tilde W^l_{kc} = \frac{\gamma_k}{\sigma_k} W^l_{kc}\, \frac{\lambda^{l-1}_c}{\lambda^l_k}, \qquad
    \tilde b^l_k = \frac{\gamma_k (b_k - \mu_k)/\sigma_k + \beta_k}{\lambda^l_k},

so that its potential :math:`P = \tilde b + \sum_{\text{inputs}} \tilde W \star \hat a` is compared against the
shifted thresholds :math:`c_Q Q^{-(t-1)}` (:math:`\theta = 1`). The bias is the initial potential. Binary input
spikes are worth :math:`2^{-p}` and hidden ones :math:`Q^{-(p-1)}`, so the first layer changes the base from 2 to
:math:`Q` with no extra work (base manipulation in the value domain, docs/method.md, sections 5 and 8.2).

Simulation (``mode``):

* ``"functional"``: every input spike has arrived: :math:`\mathrm{Enc}(P)`, the round-off quantised ANN.
* ``"exact"``: phase by phase with the wait :math:`T_w`. Layer :math:`l` opens its output window :math:`T_w`
  phases after the latest of its input windows; an input whose window opened :math:`d` phases before that is
  seen up to its phase :math:`t + d` at output phase :math:`t` (a residual shortcut, one layer older, has
  :math:`d = 2T_w`). The dense prefix of everything that arrived before output phase 1 is one convolution; every
  later input phase adds the convolution of that phase's spike plane; the neuron fires at the first crossing and
  stops. With :math:`T_w + 1 \ge T` this is the functional result, bit for bit.
* ``output="potential"``: the output layer integrates its whole input and returns :math:`\lambda \cdot P`
  (:math:`\lambda = 1`, ANN units); the prediction is its argmax.

Operation counts (:class:`~spikegcn.energy.LayerStats`) are exact: ANN MACs of the replaced layer, and SNN
additions as the sum over input spikes of their fan-out, computed per input position (borders, stride and
padding included), not from the uniform approximation.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..coding import _FAST_MIN, PhaseCode, decode, decode_binary, nonfinite_error
from ..energy import LayerStats
from ..kernels import conv_cpu, fused_cpu
from ..operators import Streams, ValueOp
from ..simulate import run_layer
from ..spikes import BinarySpikes, PhaseSpikes
from .base import SpikingMixin, set_scale

__all__ = [
    "CNNSpikes",
    "spike_values",
    "LayerSynapses",
    "OneSpikeLayer",
    "SpikingConv2d",
    "fold_batchnorm",
]

CNNSpikes = Union[PhaseSpikes, BinarySpikes]
_Pair = Union[int, Sequence[int]]


def _pair(v: _Pair) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ------------------------------------------------------------------------------------------------ spike planes
def spike_values(x: CNNSpikes, lo: int = 0, hi: int | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Normalised values (without :math:`\lambda`) of the spikes of ``x`` fired at input phases ``lo < p <= hi``.

    One-spike inputs give :math:`\pm Q^{-(p-1)}`, binary inputs :math:`\pm 2^{-p}` per spike (summed over the
    selected bits). ``lo = 0, hi >= T`` is the full decoded value; it may be the producing layer's kept values
    (:meth:`~spikegcn.spikes.PhaseSpikes.keep_decoded`), shared with other consumers: do not change it in place.
    """
    T = x.T_in
    hi = T if hi is None else min(hi, T)
    if isinstance(x, PhaseSpikes):
        kept = x.kept_decoded(dtype) if lo <= 0 and hi >= T else None
        if kept is not None:  # decoded by the producing layer's firing pass; the caller does not change it
            return kept
        if dtype == torch.float32 and x.phase.numel() >= _FAST_MIN:  # one compiled pass: a table zero outside (lo, hi]
            table = x.code.values(dtype, x.phase.device)
            if lo > 0 or hi < T:
                table = table.clone()
                table[1:lo + 1] = 0
                table[hi + 1:] = 0
            v = fused_cpu.decode_phase(x.phase, table, x.sign, table.new_ones(()))  # checks the phases
            if v is not None:
                return v
        v = decode(x.phase, x.code, x.sign, dtype=dtype)
        if lo > 0 or hi < T:
            v = v * ((x.phase > lo) & (x.phase <= hi))
        return v
    if isinstance(x, BinarySpikes):
        bits = x.bits
        if hi < T:  # keep the top `hi` bits (phases 1..hi)
            bits = (bits >> (T - hi)) << (T - hi)
        if lo > 0:  # drop the top `lo` bits
            bits = bits & ((1 << (T - lo)) - 1)
        return decode_binary(bits, T, x.sign, dtype=dtype)
    raise TypeError(f"CNN spiking layers take PhaseSpikes or BinarySpikes, got {type(x).__name__}")


def _has_spikes_at(x: CNNSpikes, p: int) -> bool:
    if isinstance(x, PhaseSpikes):
        return bool((x.phase == p).any())
    return bool(((x.bits >> (x.T - p)) & 1).any())


def _window_counts(in_hw: tuple[int, int], fn, device: torch.device) -> Tensor:
    """``[H, W]`` number of output positions of the linear window map ``fn`` that read each input position."""
    x = torch.ones(1, 1, *in_hw, dtype=torch.float64, device=device, requires_grad=True)
    with torch.enable_grad():
        fn(x).sum().backward()
    return x.grad[0, 0].round()


def _border(fan: Tensor) -> tuple[float, Tensor, Tensor]:
    """``(max, positions where the fan-out map is below its max, the shortfall there)``."""
    fmax = fan.max()
    idx = (fan.reshape(-1) != fmax).nonzero().squeeze(1)
    return float(fmax), idx, fmax - fan.reshape(-1)[idx]


def fold_batchnorm(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d | nn.BatchNorm1d | None
                   ) -> tuple[Tensor, Tensor]:
    r"""Fold an eval-mode BatchNorm into the preceding layer (float64):
    :math:`W' = W\gamma/\sigma`, :math:`b' = (b - \mu)\gamma/\sigma + \beta` (docs/method.md, section 7 and A11)."""
    w = weight.detach().double()
    b = w.new_zeros(w.shape[0]) if bias is None else bias.detach().double()
    if bn is None:
        return w, b
    g, beta, mu, var = _bn_params(bn)
    return w * g.view(-1, *([1] * (w.dim() - 1))), (b - mu) * g + beta


def _bn_params(bn: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn} has no running statistics (track_running_stats=False); it cannot be folded")
    var = bn.running_var.detach().double()
    mu = bn.running_mean.detach().double()
    g = 1.0 / torch.sqrt(var + bn.eps)
    beta = torch.zeros_like(mu)
    if bn.affine:
        g = g * bn.weight.detach().double()
        beta = bn.bias.detach().double()
    return g, beta, mu, var


# ------------------------------------------------------------------------------------------------ synapses
class LayerSynapses(ValueOp):
    """The synaptic inputs of a CNN neuron layer as one operator on its input :class:`Streams` (normalised values
    in, normalised potential out, the bias as initial potential): what :func:`~spikegcn.simulate.run_layer` drives.
    Exact mode runs on the compiled convolution kernel (:func:`~spikegcn.kernels.conv_cpu.fire_late`) when every
    input has a convolution form, else phase by phase on :meth:`delta`."""

    def __init__(self, layer: "OneSpikeLayer"):
        self.layer = layer

    def _synapse_sum(self, inp: Streams, k: int, dtype: torch.dtype, n: int) -> Tensor:
        """The sum of the first ``n`` inputs' synaptic maps of their phases ``<= k``, in input order."""
        z = None
        # in place: the synapse outputs are fresh tensors (a synapse must not return its input or a view of it)
        for i, (x, o) in enumerate(zip(inp.items[:n], inp.offsets[:n])):
            c = self.layer.synapse(i, spike_values(x, 0, k - o, dtype=dtype))
            z = c if z is None else z.add_(c)
        assert z is not None
        return z

    def apply(self, inp: Streams, k: int, dtype: torch.dtype) -> Tensor:
        z = self._synapse_sum(inp, k, dtype, len(inp.items))
        if self.layer.bias is not None:
            z.add_(self.layer._channel_view(self.layer.bias, z.dim()))
        return z

    def fire_closed_form(self, inp: Streams, code: PhaseCode, signed: bool, dtype: torch.dtype, count: bool = True
                         ) -> tuple[Tensor, Tensor | None, int, int, Tensor, Tensor | None] | None:
        """Closed-form firing in one compiled pass after the convolutions (``fused_cpu.encode_join``): a diagonal
        last synapse (a residual join's identity or option-A shortcut) and the bias are added there, in the order
        :meth:`apply` adds them, and the output's decoded values are written over the potential for the next
        layer; with ``count``, a feature map's spikes per position are counted in the same pass (the next layer's
        addition count). ``(phase, sign, saturated, fired, values, counts or None)``, or ``None`` where the kernel
        does not serve (float32 on the CPU, T <= 31), checked before any convolution runs."""
        layer, k, last = self.layer, inp.T_in, len(inp.items) - 1
        bias = layer.bias
        if (dtype != torch.float32 or code.T > 31 or fused_cpu.load() is None or layer.scale.device.type != "cpu"
                or (bias is not None and (bias.dtype != dtype or bias.device.type != "cpu"))):
            return None
        diag = layer.diagonal_synapse(last) if last > 0 else None
        # the kernel adds the diagonal synapse, and writes the output's values into z: the tensor kept must be the
        # one written (contiguous)
        z = self._synapse_sum(inp, k, dtype, last if diag is not None else last + 1).contiguous()
        shortcut = None
        if diag is not None:
            shortcut = (spike_values(inp.items[last], 0, k - inp.offsets[last], dtype=dtype), *diag)
        fast = fused_cpu.encode_join(z, code.thresholds(dtype, z.device).flip(0), signed, bias=bias,
                                     shortcut=shortcut, table=code.values(dtype, z.device),
                                     count_positions=count and z.dim() == 4)
        if fast is None:  # not expected after the checks above; the caller's torch path redoes the convolutions
            return None
        phase, sign, bad, saturated, fired, counts = fast
        if bad:
            raise nonfinite_error(bad)
        return phase, sign, saturated, fired, z, counts

    def delta(self, inp: Streams, r: int, dtype: torch.dtype, cache: dict | None = None) -> Tensor | None:
        # one spike plane per input: nothing to decode twice, so no cache
        acc = None
        for i, (x, o) in enumerate(zip(inp.items, inp.offsets)):
            p = r - o
            if 1 <= p <= x.T_in and _has_spikes_at(x, p):
                c = self.layer.synapse(i, spike_values(x, p - 1, p, dtype=dtype))  # one spike plane
                acc = c if acc is None else acc + c
        return acc

    def stats(self, inp: Streams, dtype: torch.dtype) -> tuple[float, float]:
        # run_layer's ValueOp interface (a caller without its own record); the layer itself passes stats=
        counted = self.layer._count(inp.items)
        return sum(st.macs for st in counted), sum(st.additions for st in counted)

    def exact_kernel(self, inp: Streams, code: PhaseCode, bias, scale_t, signed: bool, dtype: torch.dtype,
                     backend: str, early) -> tuple[Tensor, None, float, int, Tensor | None] | None:
        """One convolution + late spikes x fan-out (kernels/conv_cpu.py), or ``None`` where it cannot run;
        ``(phase, None, saturated, fired, spikes per output position)``."""
        forms = [self.layer.conv_form(i) for i in range(len(inp.items))]
        if (not fused_cpu.available(backend) or dtype not in (torch.float32, torch.float64) or code.T > 127
                or signed or any(f is None for f in forms) or self.layer.scale.device.type != "cpu"):
            return None
        b = self.layer.bias
        b = b if b is not None and b.dtype == dtype else None  # the kernel adds it as it reads (same rounding)
        first = self._synapse_sum(inp, early.k0, dtype, len(inp.items)) if b is not None else early()
        fast = conv_cpu.fire_late(first, list(inp.items), forms, list(inp.offsets), early.k0, inp.T_in, code.Tw,
                                  code.thresholds(dtype, first.device), count=True, bias=b)
        return None if fast is None else (fast[0], None, float(fast[2]), fast[3], fast[4])


# ------------------------------------------------------------------------------------------------ neuron core
class OneSpikeLayer(nn.Module, SpikingMixin):
    r"""Base class of the CNN one-spike neuron layers (one or more synaptic inputs into one neuron per output).

    A subclass defines, for each of its :attr:`num_inputs` inputs ``i``, the synaptic map :meth:`synapse`
    (normalised values in, normalised potential contribution out), :meth:`fanout` (outgoing synapses of each
    input neuron) and :meth:`macs` (ANN multiply-accumulates per sample), plus :meth:`weight_tensors` (the
    weights, output channel first, for :meth:`quantize_weights_`). The layer's inputs become one
    :class:`LayerSynapses` operator run by :func:`~spikegcn.simulate.run_layer`, the neuron loop every spiking layer
    shares; the spike timing of several inputs and the exact operation counts live here.

    Args:
        out_channels (int): output channels (features).
        code (PhaseCode): output code, wait ``code.Tw``.
        mode (str): ``"exact"`` or ``"functional"``.
        output (str): ``"spikes"`` (hidden) or ``"potential"`` (output layer, no spikes).
    """

    num_inputs: int = 1
    out_ndim: int = 4  # [N, C, H, W] feature maps; [N, F] for a fully-connected layer
    kind: str = "neuron"
    scale: Tensor
    bias: nn.Parameter | None

    def _init_layer(self, out_channels: int, code: PhaseCode | None, mode: str, output: str) -> None:
        self._init_spiking(code or PhaseCode(16, 1.3), mode, output)
        self.out_channels = int(out_channels)
        self.weight_bits: int | None = None
        # lambda^l: ANN value of a phase-1 output spike, per output channel (all equal when layer-wise)
        self.register_buffer("scale", torch.ones(out_channels))
        self._fanout_cache: dict = {}

    # ---- subclass interface
    def synapse(self, i: int, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Input ``i``'s synaptic map of the normalised values ``x``: a fresh tensor (the neuron adds into it in
        place), never ``x`` or a view of it; ``x`` may be shared with other consumers and must not change."""
        raise NotImplementedError

    def fanout(self, i: int, in_shape: torch.Size) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def macs(self, i: int, in_shape: torch.Size) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def weight_tensors(self) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def diagonal_synapse(self, i: int) -> tuple[Tensor, int, tuple[int, int]] | None:
        """Input ``i``'s synapses as ``(weight [C_out], first output channel, (sh, sw))`` when output channel ``c``
        takes input channel ``c - first`` at every ``(sh, sw)``-th position times ``weight[c]`` (a residual join's
        shortcut), for the compiled closed-form pass; else ``None``."""
        return None

    def conv_form(self, i: int) -> conv_cpu.ConvForm | None:
        """Input ``i``'s synapses as a convolution (weight ``[kh, kw, C_in, C_out]``, stride, padding, dilation)
        for the compiled exact-mode kernel, or ``None`` (the layer then steps phase by phase)."""
        return None

    def input_kind(self, i: int) -> str:
        return self.kind if i == 0 else "shortcut"

    # ---- helpers
    def _dtype(self) -> torch.dtype:
        return self.scale.dtype

    def _channel_view(self, t: Tensor, ndim: int) -> Tensor:
        return t.view(-1, *([1] * (ndim - 2))) if t.dim() else t

    def _cached_fanout(self, key, make) -> Tensor:
        if key not in self._fanout_cache:
            self._fanout_cache[key] = make()
        return self._fanout_cache[key]

    @torch.no_grad()
    def quantize_weights_(self, bits: int = 8) -> "OneSpikeLayer":
        r"""Symmetric linear quantisation of the normalised weights, one step size per output channel shared by
        all inputs of the neuron (the step goes into its threshold in hardware): :math:`s_k = \max|\tilde W_k| /
        (2^{b-1}-1)`, :math:`\tilde W \leftarrow s_k\,\mathrm{round}(\tilde W / s_k)`. Biases stay in full
        precision (an INT32 accumulator). In place; the Table VI ablation."""
        qmax = 2 ** (bits - 1) - 1
        ws = self.weight_tensors()
        m = torch.stack([w.detach().abs().reshape(w.shape[0], -1).amax(1) for w in ws]).amax(0)
        step = torch.where(m > 0, m / qmax, torch.ones_like(m))
        for w in ws:
            s = step.view(-1, *([1] * (w.dim() - 1)))
            w.copy_(torch.round(w / s).clamp_(-qmax, qmax) * s)
        self.weight_bits = bits
        return self

    # ---- simulation
    @torch.no_grad()
    def forward(self, *inputs: CNNSpikes) -> PhaseSpikes | Tensor:
        if len(inputs) != self.num_inputs:
            raise TypeError(f"{self._get_name()} takes {self.num_inputs} spike input(s), got {len(inputs)}")
        for x in inputs:
            if not isinstance(x, (PhaseSpikes, BinarySpikes)):
                raise TypeError(f"{self._get_name()} takes PhaseSpikes or BinarySpikes (e.g. from a PhaseEncoder), "
                                f"got {type(x).__name__}")
        self.stats = self._count(inputs)
        # The output window opens Tw phases after the latest input window; an input whose window opened d phases
        # earlier runs d virtual phases ahead, so the neuron waits for the oldest one (max_d = out_start - base).
        base = min(x.start for x in inputs)
        out_start = max(x.start for x in inputs) + self.code.Tw
        streams = Streams(inputs, [x.start - base for x in inputs])
        out, _ = run_layer(streams, LayerSynapses(self), self.code, None,
                           self._channel_view(self.scale, self.out_ndim), mode=self.mode, output=self.output,
                           start=out_start, dtype=self._dtype(), backend=self.backend, wait=out_start - base,
                           normalized=True, stats=self.stats[0])
        return out

    def _count(self, inputs: Sequence[CNNSpikes]) -> list[LayerStats]:
        out = []
        for i, x in enumerate(inputs):
            data = x.phase if isinstance(x, PhaseSpikes) else x.bits
            fan = self.fanout(i, data.shape[1:]).to(torch.float64)
            in_spikes, additions = self._spikes_and_additions(i, x, fan)
            kind = "output" if (i == 0 and self.output == "potential") else self.input_kind(i)
            out.append(LayerStats(
                name=self._get_name() if i == 0 else f"{self._get_name()}.shortcut",
                macs=float(self.macs(i, data.shape[1:])) * data.shape[0], in_neurons=int(data.numel()),
                in_spikes=in_spikes, additions=additions, kind=kind))
        return out

    def _spikes_and_additions(self, i: int, x: CNNSpikes, fan: Tensor) -> tuple[float, float]:
        """Input spikes and the sum of their fan-outs (exact integers in float64). Feature maps: the per-position
        spike counts its producer took in its firing pass, or the compiled kernel's (one pass); without it, for
        one-spike inputs with a fan-out map constant but for a few (border) positions, the total count times the
        interior fan-out corrected at those positions only."""
        data = x.phase if isinstance(x, PhaseSpikes) else x.bits
        kept = x.kept_position_counts() if isinstance(x, PhaseSpikes) else None  # counted by its producer
        if fan.dim() == 2 and data.dim() == 4:
            per_pos_c = kept if kept is not None else fused_cpu.count_per_position(data)
            if per_pos_c is not None:
                per_pos = per_pos_c.to(torch.float64)
                return float(per_pos.sum()), float((per_pos * fan).sum())
        if not isinstance(x, PhaseSpikes):
            per_pos = x.spike_counts().sum(0).to(torch.float64)
            return float(per_pos.sum()), float((per_pos * fan).sum())
        total = float(kept.sum()) if kept is not None else float(torch.count_nonzero(data))
        if fan.numel() == 1:
            return total, total * float(fan)
        if fan.dim() == 2 and data.dim() == 4:
            fmax, idx, delta = self._cached_fanout(("border", i, tuple(fan.shape)), lambda: _border(fan))
            if 2 * idx.numel() <= fan.numel():
                at = torch.count_nonzero(data.flatten(2)[:, :, idx], dim=(0, 1)).to(torch.float64)
                return total, total * fmax - float((delta * at).sum())
        per_pos = (data != 0).sum(0, dtype=torch.float64)
        return float(per_pos.sum()), float((per_pos * fan).sum())

    def _layer_repr(self) -> str:
        q = f", weight_bits={self.weight_bits}" if self.weight_bits else ""
        return f"{self._spiking_repr()}{q}"


# ------------------------------------------------------------------------------------------------ conv
class SpikingConv2d(OneSpikeLayer):
    r"""One-spike neurons after a 2-D convolution (BatchNorm folded in, channel-wise :math:`\lambda`).

    .. math::
        \hat a^l_k = \mathrm{Enc}\Big(\tilde b_k + \sum_c \tilde W_{kc} \star \hat a^{l-1}_c\Big),
        \qquad \tilde W_{kc} = W'_{kc}\,\lambda^{l-1}_c / \lambda^l_k,\; \tilde b_k = b'_k / \lambda^l_k

    with :math:`W', b'` the BN-folded weights (see :func:`fold_batchnorm`). The output spike of channel
    :math:`k` at phase :math:`t` is worth :math:`\lambda^l_k Q^{-(t-1)}`.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size, stride, padding, dilation, groups: as :class:`torch.nn.Conv2d` (zero padding; ``padding``
            given as numbers).
        bias (bool): bias (the initial potential).
        code (PhaseCode): output code.
        mode (str): ``"exact"`` or ``"functional"``.
        output (str): ``"spikes"`` or ``"potential"``.
    """

    kind = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Pair, stride: _Pair = 1,
                 padding: _Pair = 0, dilation: _Pair = 1, groups: int = 1, bias: bool = True,
                 code: PhaseCode | None = None, mode: str = "exact", output: str = "spikes"):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups={groups}")
        self._init_layer(out_channels, code, mode, output)
        self.in_channels, self.groups = int(in_channels), int(groups)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        self.scale.fill_(1.0)
        self.weight_bits = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, in_scale: Tensor | float = 1.0,
                  scale: Tensor | float = 1.0, **kwargs) -> "SpikingConv2d":
        r"""From a trained :class:`torch.nn.Conv2d` (and the eval-mode BatchNorm after it): BN folded, then
        normalised by the input scale :math:`\lambda^{l-1}` (per input channel or scalar) and the output scale
        :math:`\lambda^l` (per output channel or scalar; 1 for an output layer)."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only numeric zero padding is supported, got {conv.padding!r} / {conv.padding_mode!r}")
        w, b = fold_batchnorm(conv.weight, conv.bias, bn)
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=(conv.bias is not None or bn is not None), **kwargs)
        layer.load_normalized_(w, b, in_scale, scale)
        return layer

    @torch.no_grad()
    def load_normalized_(self, weight: Tensor, bias: Tensor | None, in_scale: Tensor | float,
                         scale: Tensor | float) -> "SpikingConv2d":
        """Set the Eq. 2 weights from ANN-unit (BN-folded) ``weight``/``bias`` and the two scales."""
        w = weight.double()
        lam_in = torch.as_tensor(in_scale, dtype=torch.float64, device=w.device).expand(self.in_channels)
        cin_g, cout_g = self.in_channels // self.groups, self.out_channels // self.groups
        # input channel of weight[k, c_local] is group(k) * cin_g + c_local
        lam_w = lam_in.view(self.groups, cin_g).repeat_interleave(cout_g, 0)  # [out, cin_g]
        lam_out = set_scale(self.scale, scale)
        self.weight.copy_(w * lam_w[:, :, None, None] / lam_out[:, None, None, None])
        if self.bias is not None:
            self.bias.copy_((lam_out.new_zeros(self.out_channels) if bias is None else bias.double()) / lam_out)
        return self

    def synapse(self, i: int, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)

    def conv_form(self, i: int) -> conv_cpu.ConvForm | None:
        if self.groups != 1:
            return None
        return self.weight.detach().permute(2, 3, 1, 0), self.stride, self.padding, self.dilation

    def _conv_counts(self, hw: tuple[int, int]) -> Tensor:
        ones = torch.ones(1, 1, *self.kernel_size, dtype=torch.float64, device=self.weight.device)
        return _window_counts(hw, lambda x: F.conv2d(x, ones, None, self.stride, self.padding, self.dilation),
                              self.weight.device)

    def fanout(self, i: int, in_shape: torch.Size) -> Tensor:
        # a spike at (c, y, x) reaches out/groups channels at every output position whose window covers (y, x)
        hw = tuple(in_shape[-2:])
        return self._cached_fanout(hw, lambda: self._conv_counts(hw) * (self.out_channels // self.groups))

    def macs(self, i: int, in_shape: torch.Size) -> float:
        H, W = in_shape[-2:]
        kh, kw = self.kernel_size
        ho = (H + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (W + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return float(ho * wo * self.out_channels * (self.in_channels // self.groups) * kh * kw)

    def weight_tensors(self) -> list[Tensor]:
        return [self.weight]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, {self._layer_repr()})")
