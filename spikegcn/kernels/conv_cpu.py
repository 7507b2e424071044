r"""Exact-mode CNN neuron layers with a wait :math:`T_w < T` on the CPU: one convolution plus the late spikes.

A layer's inputs are ordered by a common virtual phase :math:`r` (:class:`spikegcn.operators.Streams`, set up by
:meth:`spikegcn.nn.conv.OneSpikeLayer.forward`). Everything with :math:`r \le k_0 = T_w' + 1` (the layer's wait in
virtual phases) has arrived before output phase 1: its potential (the bias plus one dense convolution per input) is
computed by :func:`spikegcn.simulate.run_layer` with torch. The late spikes (:math:`r > k_0`: small values; a third
to a half of the spikes of a ResNet-20 layer at :math:`T_w = 8`, see ``results/cnn_speed.md``) are listed per input
position (sorted, with a CSR-style pointer; built by ``csrc/late_lists.cpp``) and handed with the early potential
to the compiled kernel ``conv_exact`` (``csrc/conv_exact.cpp``). It walks the output positions like im2col rows, in
tiles: for every kernel tap the tile's rows on one output line take the late spikes under them (one contiguous run
of the lists) and add value x weight column into the bin of their phase, then the neurons run their phase loop (the
rule of :func:`~spikegcn.neuron.one_spike_fire`) over the bins. The cost is the dense convolution plus late spikes x
fan-out, instead of one convolution per late phase.

The graph engine's dense layers (``x W^T``, :meth:`spikegcn.simulate.DenseOp.exact_kernel`) run on the same kernel
as a 1 x 1 convolution of a 1 x 1 map, with signed neurons where the layer has them and their late bins kept in ANN
units (divided by lambda per phase as on the event path, so the spikes are identical).

Every synaptic input must be a convolution (:meth:`OneSpikeLayer.conv_form`: a conv, a fully-connected layer
as a 1 x 1 conv on a 1 x 1 map, a residual shortcut as a (strided) diagonal 1 x 1 conv, an average pool as a
depthwise conv). The spikes equal the phase-by-phase path's up to the float summation order inside a phase bin.
:func:`fire_late` returns ``None`` (the caller then steps phase by phase) when the compiled kernels are not built,
the tensors are not CPU float32/float64, or an input has no convolution form.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..coding import _check_finite, nonfinite_error
from ..spikes import BinarySpikes, PhaseSpikes
from . import fused_cpu

__all__ = ["ConvForm", "late_spikes", "fire_late"]

# weight [kh, kw, Cin, C] (channels last), stride, padding, dilation
ConvForm = tuple[Tensor, tuple[int, int], tuple[int, int], tuple[int, int]]


def _as_map(t: Tensor, flat: bool = False) -> Tensor:
    """``[N, C, H, W]`` as it is; ``[N, F]`` features, or a map read as features (``flat``), as ``[N, F, 1, 1]``
    (a 1 x 1 map, channel-major like ``flatten(1)``)."""
    return t if t.dim() == 4 and not flat else t.reshape(t.shape[0], -1, 1, 1)


def late_spikes(x: PhaseSpikes | BinarySpikes, lo: int, offset: int, dtype: torch.dtype, flat: bool = False
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The spikes of ``x`` fired at phases ``p > lo``, sorted by input position ``(n, y, x)``, then channel, then
    phase: ``(ptr, channel, virtual phase p + offset, value)`` with ``ptr`` the ``[N H W + 1]`` offsets of each
    position's spikes and ``value`` normalised (:math:`\\pm Q^{-(p-1)}`, or :math:`\\pm 2^{-p}` per bit of a
    binary input). ``flat``: read a map as features (``[N, C H W]``, one position per sample). The compiled
    builders read the NCHW spikes in place; the torch path below is the reference they are tested against."""
    data = x.phase if isinstance(x, PhaseSpikes) else x.bits
    nchw = _as_map(data, flat).contiguous()
    if lo >= x.T_in:  # nothing fires after the last phase (a shortcut whose spikes all arrived early): no scan
        n, _, h, w = nchw.shape
        dev = nchw.device
        return (torch.zeros(n * h * w + 1, dtype=torch.int64, device=dev),
                torch.empty(0, dtype=torch.int32, device=dev), torch.empty(0, dtype=torch.int16, device=dev),
                torch.empty(0, dtype=dtype, device=dev))
    sign = _as_map(x.sign, flat).contiguous() if x.sign is not None else None
    mod = fused_cpu.load()
    if mod is not None and hasattr(mod, "late_list_bits") and nchw.device.type == "cpu":
        rows = nchw.view(nchw.shape[0], nchw.shape[1], nchw.shape[2] * nchw.shape[3])
        s = sign.view(rows.shape) if sign is not None else torch.empty(0, dtype=torch.int8, device=rows.device)
        if isinstance(x, PhaseSpikes) and rows.dtype == torch.int8:
            return tuple(mod.late_list(rows, s, x.code.values(dtype).contiguous(), lo, offset,
                                        fused_cpu._ISA[fused_cpu.max_isa()]))
        if isinstance(x, BinarySpikes) and rows.dtype in (torch.int32, torch.int64) and 0 <= lo < x.T:
            like = torch.empty(0, dtype=dtype, device=rows.device)
            return tuple(mod.late_list_bits(rows, s, x.T, lo, offset, like))
    return _late_spikes_torch(x, nchw, sign, lo, offset, dtype)


def _late_spikes_torch(x: PhaseSpikes | BinarySpikes, nchw: Tensor, sign_nchw: Tensor | None, lo: int, offset: int,
                       dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    nhwc = nchw.permute(0, 2, 3, 1).contiguous()
    N, H, W, C = nhwc.shape
    sign = sign_nchw.permute(0, 2, 3, 1).reshape(-1) if sign_nchw is not None else None
    if isinstance(x, PhaseSpikes):
        flat_ph = nhwc.reshape(-1)
        sel = (flat_ph > max(-128, min(lo, 127))).nonzero().squeeze(1)  # a bound int8 holds (as the kernel)
        phase = flat_ph[sel].to(torch.int64)
        value = x.code.values(dtype, flat_ph.device)[phase]
        pos_c = sel
    else:
        T = x.T
        p = torch.arange(max(lo, 0) + 1, T + 1, device=nhwc.device)  # the late bit phases
        nb = p.numel()
        planes = (nhwc.unsqueeze(-1) >> (T - p).to(nhwc.dtype)) & 1  # [N, H, W, C, late bits]
        sel = planes.reshape(-1).nonzero().squeeze(1)
        phase = p[sel % nb]
        value = torch.pow(torch.full((), 2.0, dtype=torch.float64, device=sel.device), -phase).to(dtype)
        pos_c = sel // nb
    if sign is not None:
        value = value * sign[pos_c].to(dtype)
    pos, ch = pos_c // C, pos_c % C
    ptr = torch.zeros(N * H * W + 1, dtype=torch.int64, device=pos.device)
    torch.cumsum(torch.bincount(pos, minlength=N * H * W), 0, out=ptr[1:])
    return ptr, ch.to(torch.int32), (phase + offset).to(torch.int16), value


def fire_late(first: Tensor, inputs: list, forms: list, offsets: list[int], k0: int, T_v: int, max_d: int,
              thresholds: Tensor, in_scales: list | None = None, div: Tensor | None = None, signed: bool = False,
              count: bool = False, bias: Tensor | None = None
              ) -> tuple[Tensor, Tensor | None, int, int, Tensor | None] | None:
    """Fire phases (``first``'s shape, int8), their signs (``signed`` neurons, else ``None``), the number of
    neurons whose final |potential| exceeds 1 (a non-finite early potential raises), of those that fired and, with
    ``count`` and a map output of more than one position, their count per output position (int64 ``[Ho, Wo]``,
    else ``None``), for the early potential
    ``first`` (``[N, C, Ho, Wo]`` or ``[N, C]``: bias included, or added per channel by the kernel as it reads
    ``first``: ``first + bias``, the torch path's order) and the late spikes of ``inputs`` (input ``i`` is
    seen ``offsets[i]`` virtual phases late, through the convolution ``forms[i]``); ``None`` when the compiled
    kernel cannot run this layer. The graph engine's dense layers keep the late bins in ANN units: ``in_scales[i]``
    (input lambda per channel) multiplies each late value and every bin is divided by ``div`` (output lambda), as
    on its event path."""
    mod = fused_cpu.load()
    if mod is None or not hasattr(mod, "conv_exact") or any(f is None for f in forms):
        return None
    if first.device.type != "cpu" or first.dtype not in (torch.float32, torch.float64) or thresholds.numel() > 127:
        return None
    rows = _as_map(first).contiguous()  # NCHW: the kernel reads it as it is (no transposed copy)
    ptrs, chs, bins, vals, weights, geom = [], [], [], [], [], []
    for i, (x, form, o) in enumerate(zip(inputs, forms, offsets)):
        weight, stride, padding, dilation = form
        data = x.phase if isinstance(x, PhaseSpikes) else x.bits
        flat = data.dim() == 4 and weight.shape[2] != data.shape[1]  # a fully-connected layer reading a map
        ptr, ch, b, value = late_spikes(x, k0 - o, o, first.dtype, flat)
        if in_scales is not None and in_scales[i] is not None:
            sc = in_scales[i].to(first.dtype)
            value = value * (sc.expand(weight.shape[2]).index_select(0, ch.long()) if sc.dim() else sc)
        H, W = _as_map(data, flat).shape[-2:]
        ptrs.append(ptr)
        chs.append(ch)
        bins.append(b)
        vals.append(value.contiguous())
        weights.append(weight.to(first.dtype).contiguous())
        geom += [H, W, *stride, *padding, *dilation]
    d = (torch.empty(0, dtype=first.dtype) if div is None else
         div.to(first.dtype).expand(rows.shape[1]).contiguous())
    per_pos = count and first.dim() == 4 and first.shape[2] * first.shape[3] > 1  # the kernel's condition
    b = first.new_empty(0) if bias is None else bias.to(first.dtype).reshape(-1).contiguous()
    thr, isa = thresholds.to(first.dtype).contiguous(), fused_cpu._ISA[fused_cpu.max_isa()]
    if len(inputs) == 1 and geom[:2] == [1, 1] and rows.shape[2:] == (1, 1) and weights[0].shape[:2] == (1, 1):
        # a dense layer (x W^T, also a fully-connected layer reading a map): its bins fit in registers
        phase, sign, sat, bad, fired = mod.dense_exact(rows.view(rows.shape[:2]), ptrs[0], chs[0], bins[0], vals[0],
                                                       weights[0][0, 0], thr, k0, T_v, max_d, d, signed, isa, b)
        at = None
    else:
        phase, sign, sat, bad, fired, at = mod.conv_exact(rows, ptrs, chs, bins, vals, weights, geom, thr, k0, T_v,
                                                          max_d, d, signed, isa, per_pos, b)
    if int(bad):
        _check_finite(first, "neuron input")
        raise nonfinite_error(int(bad))  # finite early potentials: the bias made them non-finite
    return (phase.reshape(first.shape), sign.reshape(first.shape) if signed else None, int(sat), int(fired),
            at.view(first.shape[2:]) if per_pos else None)
