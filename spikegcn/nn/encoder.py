"""Input encoder: analog features to spikes."""
from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor, nn

from ..coding import PhaseCode, _check_int, encode, encode_binary_counted, saturated_count
from ..kernels import fused_cpu
from ..spikes import BinarySpikes, PhaseSpikes
from ..validate import check_calibration, checks_enabled


class PhaseEncoder(nn.Module):
    r"""Encode input features as spikes.

    ``"binary"`` (default, docs/method.md, section 1.1): multi-spike binary phase coding with base 2 over ``T``
    phases, signed,
    :math:`x \approx \mathrm{sign}(x)\,\lambda^0 \sum_t b_t 2^{-t}` with :math:`\lambda^0` = the calibrated
    maximum of :math:`|x|` (per channel or one scalar). ``"single"``: one spike per input with the hidden
    layers' code (the Table VII ablation).

    Args:
        T (int): input phases.
        coding (str): ``"binary"`` or ``"single"``.
        code (PhaseCode, optional): code for ``"single"`` (default ``PhaseCode(T, 1.3)``).
        num_channels (int, optional): per-channel :math:`\lambda^0` when given, else one scalar.
    """

    def __init__(self, T: int = 16, coding: Literal["binary", "single"] = "binary", code: PhaseCode | None = None,
                 num_channels: int | None = None):
        super().__init__()
        self.T = _check_int("T", T, 1)
        if coding not in ("binary", "single"):
            raise ValueError(f"coding must be 'binary' or 'single', got {coding!r}")
        self.coding = coding
        self.code = code if code is not None else PhaseCode(self.T, 1.3)
        self.register_buffer("scale", torch.ones(num_channels) if num_channels else torch.tensor(1.0))
        self.register_buffer("calibrated", torch.tensor(False))
        self.saturated_inputs, self.saturated = 0, 0.0  # of the last forward

    def reset_parameters(self) -> None:
        self.scale.fill_(1.0)
        self.calibrated.fill_(False)

    @torch.no_grad()
    def calibrate(self, x: Tensor) -> None:
        """Set :math:`\\lambda^0` to the maximum of ``|x|`` (per channel when configured); 0 maps to 1.
        Non-finite features raise :class:`~spikegcn.validate.CalibrationError`."""
        check_calibration(x, "the input features")
        m = x.abs().amax(dim=0) if self.scale.dim() else x.abs().max()
        self.scale.copy_(torch.where(m > 0, m, torch.ones_like(m)))
        self.calibrated.fill_(True)

    def forward(self, x: Tensor) -> BinarySpikes | PhaseSpikes:
        if checks_enabled():
            _check_input(x)
        if x.requires_grad or x.shape != torch.broadcast_shapes(x.shape, self.scale.shape):
            xn = x / self.scale
        else:  # into a buffer advised for huge pages (a large graph's chunk sources)
            xn = torch.div(x, self.scale, out=fused_cpu.empty(x.shape, torch.result_type(x, self.scale), x.device))
        if self.coding == "binary":  # the saturated count from the encoder's pass
            bits, sign, saturated = encode_binary_counted(xn, self.T, signed=True)
            out: BinarySpikes | PhaseSpikes = BinarySpikes(bits=bits, T=self.T, scale=self.scale, sign=sign)
        else:
            saturated = saturated_count(xn, signed=True)
            phase, sign = encode(xn, self.code, signed=True)
            out = PhaseSpikes(phase=phase, code=self.code, scale=self.scale, sign=sign)
        # features above the calibrated maximum are clipped to it: count them, and say so once
        self.saturated_inputs = int(saturated)
        self.saturated = self.saturated_inputs / xn.numel() if xn.numel() else 0.0
        if self.saturated_inputs:
            warnings.warn("input features above the calibrated maximum lambda^0 saturate at lambda^0 (the fraction "
                          "is in PhaseEncoder.saturated); calibrate on data that covers the inputs' range",
                          stacklevel=2)
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(T={self.T}, coding={self.coding!r})"


def _check_input(x) -> None:
    if x is None:
        raise ValueError("the input encoder got x=None, but the model was converted with input features: pass the "
                         "feature tensor (x=None is only for featureless models)")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        what = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"the input encoder takes a floating-point feature tensor, got {what}")
    if x.dim() < 2:
        raise ValueError(f"input features must be at least 2-D ([num_nodes, channels] or [batch, C, H, W]), got "
                         f"shape {tuple(x.shape)}; for one feature per node pass x.unsqueeze(-1)")
