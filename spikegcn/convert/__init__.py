"""Conversion of trained ReLU networks to one-spike SNNs (observe -> calibrate -> convert)."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..coding import PhaseCode
from .graph import SpikingModel, UnsupportedModuleError, convert_graph_model
from .observers import activation_scale

__all__ = ["convert", "SpikingModel", "UnsupportedModuleError", "activation_scale"]


def convert(model: nn.Module, data: Any, code: PhaseCode | None = None, mode: str = "exact",
            percentile: float | None = None, channel_wise: bool = True, variant: str = "signed",
            input_coding: str = "binary", backend: str = "auto") -> SpikingModel:
    """Convert a trained PyG model built from ``GCNConv``, ``Linear`` and ReLU into a one-spike SNN.

    Args:
        model: the trained ANN (``torch.nn.Module``; its forward must be traceable by ``torch.fx``).
        data: calibration data: a PyG ``Data`` (attributes matched to the forward's parameter names;
            a missing ``x`` means featureless input ``X = I``), or a tuple / dict of forward arguments.
        code: the code of every neuron layer (default ``PhaseCode(T=16, Q=1.3)``, ``Tw = T``).
        mode: ``"exact"`` (phase by phase with ``code.Tw``: late and false spikes) or ``"functional"``
            (closed form, exactly the round-off quantised ANN; equal to exact when ``Tw >= T``).
        percentile: lambda = this percentile of each channel's activation instead of its max.
        channel_wise: lambda per feature channel (default) or one per layer.
        variant: sign handling of GCN message passing (spec A14): ``"signed"``, ``"relu_mp"``, ``"agg_first"``.
        input_coding: ``"binary"`` multi-spike input (default) or ``"single"`` spike input.

    Returns:
        a :class:`SpikingModel` with the model's forward signature.
    """
    code = code if code is not None else PhaseCode(16, 1.3)
    if not isinstance(code, PhaseCode):
        raise TypeError(f"code must be a PhaseCode, got {type(code).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return convert_graph_model(model, data, code, mode=mode, percentile=percentile, channel_wise=channel_wise,
                               variant=variant, input_coding=input_coding, backend=backend)
