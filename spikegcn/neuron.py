r"""One-spike neurons with wait time and base manipulation (docs/method.md, sections 5 and 8.1-8.3).

A layer receives spikes of base :math:`Q_{in}` over :math:`T_{in}` input phases and emits spikes of base
:math:`Q_{out}`. In the value domain (docs/method.md, section 8.2) its partial pre-activation after input phase
:math:`p` is

.. math::
    P(p) = \tilde b + \sum_{p' \le p} v^{in}_{p'} \sum_i \tilde W_{i} s_i(p'),

and output phase :math:`t` sees the input prefix up to :math:`\min(t + T_w, T_{in})`. The neuron fires at the
first output phase with :math:`P \ge c_Q Q_{out}^{-(t-1)}` (signed neurons: :math:`|P| \ge \dots`, carrying the
sign of :math:`P`) and then stops computing, so late and false spikes cannot be corrected. With
:math:`T_w \ge T_{in}` the result is the round-off encoding of the full pre-activation.

:func:`one_spike_fire` is the production path (vectorised over neurons, streaming over phases: the state is
one float tensor plus the integer phases). :func:`membrane_reference` is Algorithm 1 in the membrane domain
(:math:`V \leftarrow Q_{in} V + \sum_i W'_i s_i`, threshold :math:`c\,\theta\,Q_{in}^{T_w}(Q_{in}/Q_{out})^{t-1}`),
kept as the reference the tests compare against. :func:`multi_spike_fire` is the conventional multi-spike
phase neuron with soft reset, the baseline the paper compares against.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor

from .coding import PhaseCode, _check_finite, _check_int, encode

__all__ = ["PhaseInput", "one_spike_fire", "membrane_reference", "multi_spike_fire"]

# Per-phase input of a layer: a [T_in, *shape] tensor, or a callable giving the (already phase-weighted)
# contribution of input phase p = 1..T_in, or None when nothing arrives at that phase.
PhaseInput = Union[Tensor, Callable[[int], Union[Tensor, None]]]


def _getter(inputs: PhaseInput, T_in: int) -> Callable[[int], Tensor | None]:
    if isinstance(inputs, Tensor):
        if inputs.shape[0] != T_in:
            raise ValueError(f"phase input has {inputs.shape[0]} phases, expected T_in={T_in}")
        return lambda p: inputs[p - 1]
    if not callable(inputs):
        raise TypeError("inputs must be a [T_in, ...] tensor or a callable phase -> tensor")
    return inputs


def one_spike_fire(
    inputs: PhaseInput,
    code: PhaseCode,
    T_in: int | None = None,
    bias: Tensor | float | None = None,
    signed: bool = False,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    final_potential: Callable[[Tensor], None] | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""Fire phases of a layer of one-spike neurons (value domain, streaming over phases).

    Args:
        inputs: per-phase input in normalised units, already weighted by the input phase value
            :math:`v^{in}_p` (this is where the input base :math:`Q_{in}` enters): a ``[T_in, *shape]`` tensor
            or a callable ``p -> Tensor | None`` for ``p = 1..T_in``.
        code (PhaseCode): output code (``T``, ``Q_out``, shift, ``Tw``).
        T_in (int, optional): input phases (default: ``code.T``, or the tensor's first dimension).
        bias: normalised bias, the initial potential (broadcast to ``shape``).
        signed (bool): signed one-spike neurons (docs/method.md, A14) instead of ReLU neurons.
        shape, dtype, device: state shape and dtype (needed only for a callable that may return ``None``
            first; otherwise taken from the first tensor seen).
        final_potential: called with the potential after the last input phase that arrived (bias included),
            e.g. to count saturated neurons (:func:`spikegcn.coding.saturated_count`).

    Returns:
        ``(phase, sign)`` as :func:`spikegcn.coding.encode`.
    """
    if T_in is None:
        T_in = inputs.shape[0] if isinstance(inputs, Tensor) else code.T
    T_in = _check_int("T_in", T_in, 1)
    acc = _Potential(_getter(inputs, T_in), shape, dtype, device)
    # Everything arrives before the first output phase: the layer is the closed-form round-off quantiser.
    if code.Tw + 1 >= T_in:
        for p in range(1, T_in + 1):
            acc.add(p)
        P = acc.value()
        if bias is not None:
            P += bias
        if final_potential is not None:
            final_potential(P)
        return encode(P, code, signed=signed)
    return _fire_stepped(acc, code, T_in, bias, signed, final_potential)


class _Potential:
    """The partial pre-activation of a layer, input phase by input phase; the state tensor is made from ``shape``
    or from the first input that arrives."""

    def __init__(self, get: Callable[[int], Tensor | None], shape, dtype, device):
        self.get, self.shape, self.dtype, self.device = get, shape, dtype, device
        self.P: Tensor | None = None
        if shape is not None:
            self.P = torch.zeros(shape, dtype=dtype or torch.float32, device=device)

    def add(self, p: int) -> None:
        x = self.get(p)
        if x is None:
            return
        if self.P is None:
            self.P = torch.zeros(x.shape if self.shape is None else self.shape, dtype=self.dtype or x.dtype,
                                 device=self.device or x.device)
        self.P += x

    def value(self) -> Tensor:
        if self.P is None:
            raise ValueError("no input arrived and no shape was given")
        return self.P


def _fire_stepped(acc: _Potential, code: PhaseCode, T_in: int, bias, signed: bool,
                  final_potential: Callable[[Tensor], None] | None) -> tuple[Tensor, Tensor | None]:
    """Output phase ``t`` sees the input up to phase ``min(t + Tw, T_in)``; a neuron fires at its first crossing."""
    T, Tw = code.T, code.Tw
    next_p = 1
    phase = sign = thr = None
    fired = None
    for t in range(1, T + 1):
        while next_p <= min(t + Tw, T_in):
            acc.add(next_p)
            next_p += 1
        P = acc.value()
        if phase is None:
            if bias is not None:
                P += bias
            _check_finite(P, "neuron input")
            thr = code.thresholds(P.dtype, P.device)
            phase = torch.zeros(P.shape, dtype=code.phase_dtype, device=P.device)
            fired = torch.zeros(P.shape, dtype=torch.bool, device=P.device)
            if signed:
                sign = torch.zeros(P.shape, dtype=torch.int8, device=P.device)
        mag = P.abs() if signed else P
        now = (mag >= thr[t - 1]) & ~fired
        phase.masked_fill_(now, t)
        if signed:
            sign = torch.where(now, torch.sign(P).to(torch.int8), sign)
        fired |= now
    if final_potential is not None:
        final_potential(acc.value())
    return phase, sign


def membrane_reference(
    currents: Tensor,
    code: PhaseCode,
    Q_in: float,
    bias: Tensor | float = 0.0,
    threshold: Tensor | float = 1.0,
    input_scale: float = 1.0,
    signed: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""Algorithm 1 in the membrane domain (reference implementation, Python loop over global phases).

    Args:
        currents: ``[T_in, *shape]`` raw synaptic input :math:`\sum_i W'_{ij} s_i(p)` at each input phase,
            *not* weighted by phase value (the :math:`Q_{in}` membrane gain does that).
        code: output code (``T``, ``Q_out = code.Q``, shift, ``Tw``).
        Q_in: base of the incoming spikes (2 for the binary input layer).
        bias: bias (initial potential :math:`V_0 = b/Q_{in}`).
        threshold: :math:`\theta` (e.g. :math:`\lambda^l_k`, BN-fused); 1 for normalised weights.
        input_scale: value of an input spike at phase 1 (1 for hidden base-Q inputs, 1/2 for the binary
            input convention :math:`2^{-p}`), folded into the weights.
    """
    T_in = currents.shape[0]
    T, Tw, Q_out = code.T, code.Tw, code.Q
    I = currents.to(torch.float64) * input_scale
    V = torch.zeros(I.shape[1:], dtype=torch.float64) + torch.as_tensor(bias, dtype=torch.float64) / Q_in
    theta = torch.as_tensor(threshold, dtype=torch.float64)
    phase = torch.zeros(V.shape, dtype=code.phase_dtype)
    sign = torch.zeros(V.shape, dtype=torch.int8) if signed else None
    fired = torch.zeros(V.shape, dtype=torch.bool)
    for k in range(1, Tw + T + 1):
        V = Q_in * V + (I[k - 1] if k <= T_in else 0.0)
        t = k - Tw
        if t < 1:
            continue
        theta_t = code.c * theta * Q_in**Tw * (Q_in / Q_out) ** (t - 1)
        pos = (V >= theta_t) & ~fired
        neg = (V <= -theta_t) & ~fired & ~pos if signed else torch.zeros_like(pos)
        phase[pos | neg] = t
        if signed:
            sign[pos] = 1
            sign[neg] = -1
        fired |= pos | neg
    return phase, sign


def multi_spike_fire(
    inputs: PhaseInput,
    T: int,
    Q: float = 2.0,
    Tw: int | None = None,
    T_in: int | None = None,
    bias: Tensor | float | None = None,
) -> Tensor:
    r"""Conventional multi-spike phase neuron with soft reset (the paper's baseline; docs/method.md, 1 and 8.4).

    Output spike at phase :math:`t` is worth :math:`Q^{-t}`; the neuron fires whenever its residual
    :math:`R = P - \sum_{t'<t} b_{t'} Q^{-t'}` reaches :math:`Q^{-t}`, then subtracts it (soft reset). With
    ``Q = 2`` and all input present this is the binary expansion :func:`spikegcn.coding.encode_binary`.

    Returns:
        ``[T, *shape]`` bool spike planes.
    """
    T = _check_int("T", T, 1)
    Tw = T if Tw is None else _check_int("Tw", Tw, 0)
    if T_in is None:
        T_in = inputs.shape[0] if isinstance(inputs, Tensor) else T
    get = _getter(inputs, T_in)
    R: Tensor | None = None
    planes = []
    next_p = 1
    for t in range(1, T + 1):
        while next_p <= min(t + Tw, T_in):
            x = get(next_p)
            if x is not None:
                R = x.clone() if R is None else R + x
            next_p += 1
        if R is None:
            raise ValueError("no input arrived before the first output phase")
        if t == 1 and bias is not None:
            R = R + bias
        v = Q ** -t
        s = R >= v
        R = R - s.to(R.dtype) * v
        planes.append(s)
    return torch.stack(planes)
