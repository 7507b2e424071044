"""Input validation of converted models: ``edge_index`` and ``x`` are checked on entry, as PyG does.

Every check is one pass over its tensor (O(E) for ``edge_index``, O(N C) for ``x``) and raises a one-line
``ValueError``/``TypeError`` that names the problem and the remedy. A negative or too large node index would
otherwise be read by torch's sparse kernels as a valid (wrapped or foreign) row and change the output silently.

Trusted loops (the same, already checked graph run many times) can switch the checks off::

    with spikegcn.validate.skip_checks():
        for code in codes:
            out = snn(x, edge_index)

or process-wide with :func:`set_checks_enabled`. The switch does not affect the NaN/inf guard of
:func:`spikegcn.coding.encode`, which runs inside the neuron loop and costs one reduction.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["check_edge_index", "check_edge_weight", "check_features", "checks_enabled", "set_checks_enabled",
           "skip_checks", "count_nonfinite", "CalibrationError", "check_calibration"]

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("spikegcn_checks", default=True)
_GLOBAL = [True]


def checks_enabled() -> bool:
    """Whether input checks run (``False`` inside :func:`skip_checks` or after ``set_checks_enabled(False)``)."""
    return _GLOBAL[0] and _ENABLED.get()


def set_checks_enabled(enabled: bool) -> None:
    """Switch the input checks on or off for the whole process (prefer the scoped :func:`skip_checks`)."""
    _GLOBAL[0] = bool(enabled)


@contextlib.contextmanager
def skip_checks() -> Iterator[None]:
    """Skip the input checks inside the ``with`` block (this thread / task only), for trusted loops."""
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _has_values(t: Tensor) -> bool:
    return t.device.type != "meta" and t.numel() > 0


def _stored_values(t: Tensor) -> Tensor:
    """The stored values of a sparse tensor (the tensor itself when strided)."""
    if t.layout == torch.strided:
        return t
    return t.coalesce().values() if t.layout == torch.sparse_coo else t.values()


def count_nonfinite(t: Tensor) -> int:
    """Number of NaN/inf entries of a floating-point tensor (0 for integer or meta tensors)."""
    if not (t.is_floating_point() or t.is_complex()) or t.device.type == "meta":
        return 0
    return int((~torch.isfinite(_stored_values(t))).sum())


def _refuse_nonfinite(t: Tensor, what: str, remedy: str) -> None:
    bad = count_nonfinite(t)
    if bad:
        n = t._nnz() if t.layout != torch.strided else t.numel()
        raise ValueError(f"{what} holds {bad} NaN/inf value(s) of {n}; {remedy}")


class CalibrationError(ValueError):
    """Calibration data (or the activations a model computes from it) hold NaN/inf values."""


def check_calibration(y: Tensor, what: str) -> None:
    """Raise :class:`CalibrationError` naming ``what`` and counting its NaN and inf values, if it has any.

    A NaN would make every lambda of the layer 1.0 (``max`` ignores nothing, ``lambda > 0`` fails) and an inf an
    infinite lambda; both give wrong numbers far from their cause, so calibration refuses them up front.
    """
    if not y.is_floating_point() or y.device.type == "meta":
        return
    y = _stored_values(y)
    finite = torch.isfinite(y)
    if bool(finite.all()):
        return
    n_nan = int(torch.isnan(y).sum())
    n_inf = int((~finite).sum()) - n_nan
    raise CalibrationError(f"calibration data: {what} holds {n_nan} NaN and {n_inf} inf value(s) of {y.numel()}; "
                           f"calibrate on finite data (check the inputs, e.g. torch.isfinite(x).all(), and the "
                           f"model's weights)")


def check_edge_index(edge_index: Tensor, num_nodes: int, name: str = "edge_index") -> None:
    """``edge_index`` is an integer ``[2, E]`` tensor with ``0 <= index < num_nodes`` (or a torch sparse
    ``[num_nodes, num_nodes]`` adjacency with finite values)."""
    if not checks_enabled():
        return
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [2, num_edges], got {type(edge_index).__name__}")
    if edge_index.layout != torch.strided:
        if edge_index.dim() != 2 or edge_index.shape[1] != num_nodes:
            raise ValueError(f"sparse adjacency {name} has shape {tuple(edge_index.shape)} but the input has "
                             f"{num_nodes} nodes; pass a [{num_nodes}, {num_nodes}] adjacency")
        _refuse_nonfinite(edge_index, f"sparse adjacency {name}", "pass finite edge weights")
        return
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer node indices (torch.long), got dtype {edge_index.dtype}; "
                        f"convert it with {name}.long()")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        hint = f"; transpose it with {name}.t()" if edge_index.dim() == 2 and edge_index.shape[1] == 2 else ""
        raise ValueError(f"{name} must have shape [2, num_edges], got {tuple(edge_index.shape)}{hint}")
    if not _has_values(edge_index):
        return
    lo, hi = torch.aminmax(edge_index)
    lo, hi = int(lo), int(hi)
    if lo < 0:
        n = int((edge_index < 0).sum())
        raise ValueError(f"{name} holds {n} negative node index(es) (smallest {lo}); node indices must be in "
                         f"[0, {num_nodes - 1}]: remove or renumber those edges")
    if hi >= num_nodes:
        n = int((edge_index >= num_nodes).sum())
        raise ValueError(f"{name} holds {n} node index(es) >= num_nodes = {num_nodes} (largest {hi}); pass node "
                         f"indices in [0, {num_nodes - 1}] or features for all {hi + 1} nodes")


def check_edge_weight(edge_weight: Tensor | None, num_edges: int, name: str = "edge_weight") -> None:
    """``edge_weight`` is ``None`` or a finite floating-point ``[num_edges]`` tensor."""
    if edge_weight is None or not checks_enabled():
        return
    if not isinstance(edge_weight, Tensor) or not edge_weight.is_floating_point():
        what = edge_weight.dtype if isinstance(edge_weight, Tensor) else type(edge_weight).__name__
        raise TypeError(f"{name} must be a floating-point tensor of shape [num_edges], got {what}")
    if edge_weight.dim() != 1 or edge_weight.shape[0] != num_edges:
        raise ValueError(f"{name} must have shape [{num_edges}] (one weight per edge), got "
                         f"{tuple(edge_weight.shape)}")
    _refuse_nonfinite(edge_weight, name, "pass finite edge weights")


def check_features(x: Tensor | None, num_channels: int | None = None, allow_none: bool = False,
                   num_nodes: int | None = None, name: str = "x") -> None:
    """``x`` is a finite 2-D ``[num_nodes, num_channels]`` floating-point tensor (``None`` only when the model
    is featureless, ``allow_none=True``)."""
    if not checks_enabled():
        return
    if x is None:
        if allow_none:
            return
        want = f"[num_nodes, {num_channels}]" if num_channels else "[num_nodes, channels]"
        raise ValueError(f"{name} is None but the model was converted with node features; pass the {want} "
                         f"feature matrix ({name}=None is only for featureless models)")
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [num_nodes, channels], got {type(x).__name__}")
    if x.dim() != 2:
        hint = f"; for one feature per node pass {name}.unsqueeze(-1)" if x.dim() == 1 else ""
        raise ValueError(f"{name} must be 2-D [num_nodes, channels], got shape {tuple(x.shape)}{hint}")
    if x.layout == torch.strided and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}; convert it with {name}.float()")
    if num_channels is not None and x.shape[1] != num_channels:
        raise ValueError(f"{name} has {x.shape[1]} channels but the model was converted with {num_channels}")
    if num_nodes is not None and x.shape[0] != num_nodes:
        raise ValueError(f"{name} has {x.shape[0]} rows but the graph has {num_nodes} nodes")
    _refuse_nonfinite(x, name, "clean the features (e.g. torch.nan_to_num) before running the model")
