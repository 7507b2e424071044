"""Conversion of trained ReLU networks to one-spike SNNs, in torch.ao's shape: prepare -> calibrate -> convert.

Graphs (PyG models)::

    prepared = spikegcn.prepare(model, data)         # traced copy + observers (model untouched)
    for batch in loader:                              # any calibration loop
        prepared(batch.x, batch.edge_index, batch.batch)
    snn = spikegcn.convert(prepared, PhaseCode(16, 1.3))

or in one call, ``spikegcn.convert(model, calib, code, mode=...)`` with ``calib`` a ``Data``/``Batch``, a tuple or
dict of forward arguments, or any iterable of those (lambda = max or percentile over all of it). CNNs (a
``Conv2d`` model or image tensors) go to :func:`~spikegcn.conversion.fx.convert_cnn`. The package is
``spikegcn.conversion`` (as torch.ao's is ``quantization``), so that ``spikegcn.convert`` is only the function.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from ..coding import PhaseCode
from ..simulate import check_mode
from .build import build
from .capture import UnsupportedModuleError
from .fx import SpikingCNN, convert_cnn
from .graph import SpikingModel
from .observers import CalibrationError, activation_scale
from .prepare import PreparedGraphModule, calibrate, prepare
from .reconstruct import check_ridge, check_variant, reconstruct

__all__ = ["convert", "prepare", "calibrate", "reconstruct", "PreparedGraphModule", "SpikingModel",
           "UnsupportedModuleError", "CalibrationError", "activation_scale", "SpikingCNN", "convert_cnn"]


def convert(model: nn.Module, data: Any = None, code: PhaseCode | None = None, mode: str = "exact",
            percentile: float | None = None, channel_wise: bool = True, variant: str = "signed",
            input_coding: str = "binary", backend: str = "auto", int8: bool = False,
            fold_avgpool: bool = False, reconstruct: bool | float = False) -> SpikingModel:
    """Convert a trained ReLU model into a one-spike SNN.

    ``convert(prepared, code)`` finishes the torch.ao-shaped flow (:func:`prepare`, calibration loop);
    ``convert(model, calib, code)`` does all three steps. A model without message passing that has a ``Conv2d``
    (or is calibrated with an image tensor) is a CNN and goes to :func:`~spikegcn.conversion.fx.convert_cnn`
    (``int8`` and ``fold_avgpool`` are its options; ``variant`` and ``backend`` are the graph converter's).

    Args:
        model: the trained ANN (never modified), or a :class:`PreparedGraphModule`.
        data: calibration data: a PyG ``Data``/``Batch`` (attributes matched to the forward's parameter names;
            a missing ``x`` means featureless input ``X = I``), a tuple / dict of forward arguments, or an
            iterable of those (a ``DataLoader``, a list of subgraphs). With a prepared model: the code.
        code: the code of every neuron layer (default ``PhaseCode(T=16, Q=1.3)``, ``Tw = T``).
        mode: ``"exact"`` (phase by phase with ``code.Tw``: late and false spikes) or ``"functional"``
            (closed form, exactly the round-off quantised ANN; equal to exact when ``Tw >= T``).
        percentile: lambda = this percentile of each channel's activation instead of its max.
        channel_wise: lambda per feature channel (default) or one per layer.
        variant: sign handling of GCNConv's message passing (docs/method.md, A14): ``"signed"``,
            ``"relu_mp"``, ``"agg_first"``.
        input_coding: ``"binary"`` multi-spike input (default) or ``"single"`` spike input.
        reconstruct: refit the linear maps layer by layer to the ANN's pre-activations on the calibration data
            (:func:`~spikegcn.conversion.reconstruct.reconstruct`; ``True``: ridge 1e-4, a float: that ridge;
            not with ``variant="agg_first"``).
            Graph models only; the data must be readable more than once (a list or ``DataLoader``).

    Returns:
        a :class:`SpikingModel` with the model's forward signature.
    """
    check_mode(mode)
    ridge = _ridge(reconstruct)
    if isinstance(model, PreparedGraphModule):
        if isinstance(data, PhaseCode):
            data, code = None, data if code is None else code
        if ridge is not None:
            raise ValueError("with a prepared model, call spikegcn.reconstruct(prepared, code, data) after calibration "
                             "and before convert(prepared, code)")
        if data is not None:
            calibrate(model, data)
        _check_refit_setting(model, _code(code), channel_wise, input_coding)
        return build(model, _code(code), mode=mode, channel_wise=channel_wise, input_coding=input_coding,
                     backend=backend)
    code = _code(code)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if data is None:
        raise ValueError("convert(model, data, code) needs calibration data (or pass a prepared model)")
    if _is_cnn(model, data):
        if ridge is not None:
            raise ValueError("reconstruct is an option of the graph converter; CNNs convert without it")
        return convert_cnn(model, data, code, mode=mode, percentile=percentile, channel_wise=channel_wise,
                           input_coding=input_coding, int8=int8, fold_avgpool=fold_avgpool)
    if int8 or fold_avgpool:
        raise ValueError("int8 and fold_avgpool are options of the CNN converter")
    if ridge is not None:
        check_variant(variant)
    if ridge is not None and not _single(data) and isinstance(data, Iterator):
        raise TypeError("convert(..., reconstruct=True) reads the calibration data several times: pass a list or a "
                        "DataLoader, not a one-shot iterator or generator")
    items = iter([data]) if _single(data) else iter(data)
    first = next(items, None)
    if first is None:
        raise ValueError("calibration data is empty")
    prepared = prepare(model, first, variant=variant, percentile=percentile)
    for item in items:
        calibrate(prepared, item)
    if ridge is not None:
        _refit(prepared, code, data, ridge=ridge, channel_wise=channel_wise, input_coding=input_coding)
    return build(prepared, code, mode=mode, channel_wise=channel_wise, input_coding=input_coding, backend=backend)


_refit = reconstruct  # the keyword argument of convert() shadows the function's name inside it


def _ridge(reconstruct: bool | float) -> float | None:
    if isinstance(reconstruct, bool):
        return 1e-4 if reconstruct else None
    if not isinstance(reconstruct, float):  # reconstruct=0 or 1 would read as "off" / "on", not as a ridge
        raise ValueError(f"reconstruct must be True/False or a float ridge >= 0 (e.g. 1e-3), got {reconstruct!r}")
    return check_ridge(reconstruct)


def _check_refit_setting(prepared: PreparedGraphModule, code: PhaseCode, channel_wise: bool, input_coding: str) -> None:
    """Warn when the SNN is built with another code or lambda setting than the one reconstruct() refitted for."""
    setting = getattr(prepared, "refit_setting", None)
    if setting is None:
        return
    rc, rcw, ric = setting
    if (rc.T, rc.Q, rc.shift, rcw, ric) != (code.T, code.Q, code.shift, channel_wise, input_coding):
        warnings.warn(f"the prepared model was refitted by reconstruct() for {rc} (channel_wise={rcw}, "
                      f"input_coding={ric!r}) but is converted with {code} (channel_wise={channel_wise}, "
                      f"input_coding={input_coding!r}); call reconstruct() again with the conversion's settings",
                      stacklevel=3)


def _code(code: PhaseCode | None) -> PhaseCode:
    code = code if code is not None else PhaseCode(16, 1.3)
    if not isinstance(code, PhaseCode):
        raise TypeError(f"code must be a PhaseCode, got {type(code).__name__}")
    return code


def _single(data: Any) -> bool:
    from .prepare import _is_single

    return _is_single(data)


def _is_cnn(model: nn.Module, data: Any) -> bool:
    mods = list(model.modules())
    if any(isinstance(m, MessagePassing) for m in mods):
        return False
    return isinstance(data, Tensor) or any(isinstance(m, nn.Conv2d) for m in mods)
