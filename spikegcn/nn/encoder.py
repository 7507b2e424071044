"""Input encoder: analog features to spikes."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..coding import PhaseCode, _check_int, encode, encode_binary
from ..spikes import BinarySpikes, PhaseSpikes


class PhaseEncoder(nn.Module):
    r"""Encode input features as spikes.

    ``"binary"`` (default, spec 1.1): multi-spike binary phase coding with base 2 over ``T`` phases, signed,
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

    def reset_parameters(self) -> None:
        self.scale.fill_(1.0)
        self.calibrated.fill_(False)

    @torch.no_grad()
    def calibrate(self, x: Tensor) -> None:
        """Set :math:`\\lambda^0` to the maximum of ``|x|`` (per channel when configured); 0 maps to 1."""
        m = x.abs().amax(dim=0) if self.scale.dim() else x.abs().max()
        self.scale.copy_(torch.where(m > 0, m, torch.ones_like(m)))
        self.calibrated.fill_(True)

    def forward(self, x: Tensor) -> BinarySpikes | PhaseSpikes:
        xn = x / self.scale
        if self.coding == "binary":
            bits, sign = encode_binary(xn, self.T, signed=True)
            return BinarySpikes(bits=bits, T=self.T, scale=self.scale, sign=sign)
        phase, sign = encode(xn, self.code, signed=True)
        return PhaseSpikes(phase=phase, code=self.code, scale=self.scale, sign=sign)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(T={self.T}, coding={self.coding!r})"
