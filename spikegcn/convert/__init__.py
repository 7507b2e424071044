"""Conversion of trained ReLU networks to one-spike SNNs (observe -> calibrate -> convert)."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..coding import PhaseCode
from .graph import SpikingModel, UnsupportedModuleError, convert_graph_model
from .fx import SpikingCNN, convert_cnn
from .observers import activation_scale

__all__ = ["convert", "SpikingModel", "UnsupportedModuleError", "activation_scale", "SpikingCNN", "convert_cnn"]


def convert(model: nn.Module, data: Any, code: PhaseCode | None = None, mode: str = "exact",
            percentile: float | None = None, channel_wise: bool = True, variant: str = "signed",
            input_coding: str = "binary", backend: str = "auto", int8: bool = False,
            fold_avgpool: bool = False) -> SpikingModel:
    """Convert a trained PyG model built from ``GCNConv``, ``Linear`` and ReLU into a one-spike SNN.

    A model without ``GCNConv`` that has a ``Conv2d`` (or is calibrated with an image tensor) is a CNN and goes
    to :func:`~spikegcn.convert.fx.convert_cnn` (``data``: calibration images; ``variant`` and ``backend`` do
    not apply; ``int8`` and ``fold_avgpool`` are its options).

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
    if _is_cnn(model, data):
        return convert_cnn(model, data, code, mode=mode, percentile=percentile, channel_wise=channel_wise,
                           input_coding=input_coding, int8=int8, fold_avgpool=fold_avgpool)
    if int8 or fold_avgpool:
        raise ValueError("int8 and fold_avgpool are options of the CNN converter")
    return convert_graph_model(model, data, code, mode=mode, percentile=percentile, channel_wise=channel_wise,
                               variant=variant, input_coding=input_coding, backend=backend)


def _is_cnn(model: nn.Module, data: Any) -> bool:
    from torch_geometric.nn import GCNConv

    mods = list(model.modules())
    if any(isinstance(m, GCNConv) for m in mods):
        return False
    return isinstance(data, Tensor) or any(isinstance(m, nn.Conv2d) for m in mods)
