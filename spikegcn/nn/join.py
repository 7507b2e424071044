"""Joins of spike streams: a sum (skip connections) or an element-wise max (neurons), and a channel concat."""
from __future__ import annotations

import torch

from ..operators import ElementMax, Identity, Join
from ..spikes import PhaseSpikes
from .base import as_spike_input
from .graph_layer import SpikingGraphLayer


def _unpack(xs: tuple) -> list:
    return list(xs[0]) if len(xs) == 1 and isinstance(xs[0], (list, tuple)) else list(xs)


class SpikingJoin(SpikingGraphLayer):
    r"""Neurons on the sum (``x + conv(x)``) or the element-wise max (JumpingKnowledge ``"max"``) of streams.

    .. math::
        \mathbf{x}' = \mathrm{Enc}\big(\textstyle\sum_s \hat{\mathbf{x}}^{(s)}/\boldsymbol\lambda\big)
        \quad\text{or}\quad \mathrm{Enc}\big(\max_s \hat{\mathbf{x}}^{(s)}/\boldsymbol\lambda\big)

    The streams are aligned to one window (the earlier one waits in a delay line).
    """

    def __init__(self, channels: int, reduce: str = "sum", **kwargs):
        super().__init__(channels, bias=False, **kwargs)
        if reduce not in ("sum", "max"):
            raise ValueError(f"reduce must be 'sum' or 'max', got {reduce!r}")
        self.reduce = reduce

    @torch.no_grad()
    def forward(self, *xs):
        streams = [as_spike_input(x) for x in _unpack(xs)]
        op = ElementMax() if self.reduce == "max" else Join(*[Identity() for _ in streams])
        return self.run(streams, op)

    def extra_repr_args(self) -> str:
        return f"reduce={self.reduce!r}"


class SpikingConcat(torch.nn.Module):
    """Channel concatenation of one-spike streams (``torch.cat(..., dim=-1)``, JumpingKnowledge ``"cat"``):
    pure routing, no neurons; every stream keeps its phases, signs and lambdas."""

    @torch.no_grad()
    def forward(self, *xs) -> PhaseSpikes:
        streams = _unpack(xs)
        if not all(isinstance(s, PhaseSpikes) for s in streams):
            raise TypeError("only one-spike streams (PhaseSpikes) can be concatenated")
        code = streams[0].code
        if any(s.code != code for s in streams):
            raise ValueError("concatenated streams must share one code")
        c = [s.phase.shape[-1] for s in streams]
        ref = streams[0].phase
        scale = torch.cat([s.scale.to(ref.device).expand(n) for s, n in zip(streams, c)])
        sign = None
        if any(s.sign is not None for s in streams):
            sign = torch.cat([s.sign if s.sign is not None else (s.phase != 0).to(torch.int8) for s in streams], -1)
        return PhaseSpikes(phase=torch.cat([s.phase for s in streams], -1), code=code, scale=scale, sign=sign,
                           start=max(s.start for s in streams))
