"""Observers: activation statistics collected on calibration data (the lambda of Eq. 2)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..validate import CalibrationError, check_calibration

__all__ = ["CalibrationError", "check_calibration", "activation_scale"]


def activation_scale(y: Tensor, signed: bool, channel_wise: bool = True, percentile: float | None = None,
                     name: str = "layer activations") -> Tensor:
    """Lambda of a layer's activations ``y`` (``[N, C]`` or ``[N, C, ...]``): max (or a percentile) per channel.

    ReLU layers use the positive part, signed layers ``|y|`` (docs/method.md, section 11.2). Dead channels
    (lambda = 0) get 1.
    Non-finite activations raise :class:`CalibrationError` naming ``name``.
    """
    if percentile is not None and not (0.0 < percentile <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    check_calibration(y, name)
    a = y.detach().abs() if signed else y.detach().clamp(min=0)
    if a.dim() > 2:  # [N, C, H, W] -> channels second
        a = a.transpose(0, 1).reshape(a.shape[1], -1).t()
    a = a.reshape(a.shape[0], -1) if channel_wise else a.reshape(-1, 1)
    if percentile is None or percentile == 100.0:
        lam = a.amax(dim=0)
    else:
        k = max(1, min(a.shape[0], math.ceil(percentile / 100.0 * a.shape[0])))
        lam = a.kthvalue(k, dim=0).values
    lam = torch.where(lam > 0, lam, torch.ones_like(lam))
    return lam if channel_wise else lam.reshape(())
