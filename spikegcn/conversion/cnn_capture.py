r"""Capturing a CNN for conversion: the ``torch.fx`` tracer, the support check and the calibration observer.

:class:`CNNTracer` traces the forward with the supported layers as leaves; :func:`check_supported` names the first
module, function or method with no spiking equivalent (:class:`~spikegcn.conversion.capture.UnsupportedModuleError`);
:func:`observe` runs the calibration images through an :class:`Observer` (a :class:`torch.fx.Interpreter`) that keeps,
for every ReLU and average-pool output, the per-channel maximum (or all values, for a percentile), and the images'
:math:`\max|x|`. :meth:`Observer.lam_of` turns them into lambda (docs/method.md, A4/A5).
"""
from __future__ import annotations

import operator
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..nn.leaves import leaf_types
from .capture import UnsupportedModuleError
from .graph import _RELU_FUNCS, _is_relu
from .observers import activation_scale, check_calibration

__all__ = ["CNNTracer", "SUPPORTED_MODULES", "Observer", "observe", "check_supported", "describe", "batches"]

SUPPORTED_MODULES: tuple[type, ...] = (
    nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear,
    nn.Dropout, nn.Identity,
)  # plus the leaves registered in spikegcn.nn.leaves (e.g. vision's OptionAShortcut): see _supported()
ADD_FUNCS = (operator.add, operator.iadd, torch.add)
DROPOUT_FUNCS = (F.dropout,)
FLATTEN_FUNCS = (torch.flatten,)


class CNNTracer(fx.Tracer):
    """:class:`torch.fx.Tracer` keeping the supported layers (and, as usual, every other ``torch.nn`` layer, so
    that an unsupported one shows up as a single named node) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _supported()) or super().is_leaf_module(m, qualname)


def _supported() -> tuple[type, ...]:
    return SUPPORTED_MODULES + leaf_types()


def batches(data: Tensor | Iterable, batch_size: int):
    """Image batches of ``data``: a tensor cut into ``batch_size`` rows, or an iterable of batches or
    ``(images, labels)`` pairs."""
    if isinstance(data, Tensor):
        for i in range(0, data.shape[0], batch_size):
            yield data[i:i + batch_size]
        return
    for b in data:
        yield b[0] if isinstance(b, (tuple, list)) else b


def is_avgpool(n: fx.Node, modules: dict) -> bool:
    return n.op == "call_module" and isinstance(modules[n.target], (nn.AvgPool2d, nn.AdaptiveAvgPool2d))


def describe(n: fx.Node, modules: dict) -> str:
    if n.op == "call_module":
        return f"module '{n.target}' ({type(modules[n.target]).__name__})"
    if n.op == "call_function":
        return f"function {getattr(n.target, '__module__', '') or ''}.{getattr(n.target, '__name__', n.target)}" \
            .replace("torch._C._nn.", "torch.nn.functional.").lstrip(".")
    return f"{n.op} {n.target!r}"


_OK_METHODS = ("relu", "relu_", "flatten", "view", "reshape", "size", "add", "add_")


def check_supported(gm: fx.GraphModule, modules: dict) -> None:
    for n in gm.graph.nodes:
        if n.op == "call_module" and not isinstance(modules[n.target], _supported()):
            raise UnsupportedModuleError(
                f"cannot convert {describe(n, modules)}: supported modules are "
                f"{', '.join(t.__name__ for t in _supported())}")
        if n.op == "call_function" and n.target not in _RELU_FUNCS + ADD_FUNCS + DROPOUT_FUNCS + FLATTEN_FUNCS \
                and n.target not in (getattr, operator.getitem):
            raise UnsupportedModuleError(
                f"cannot convert {describe(n, modules)}: only relu, add, flatten and dropout are supported as "
                "functions in a CNN")
        if n.op == "call_method" and n.target not in _OK_METHODS:
            raise UnsupportedModuleError(f"cannot convert method call .{n.target}() in a CNN")
        if n.op == "get_attr":
            raise UnsupportedModuleError(f"cannot convert the use of attribute {n.target!r} in the forward")


class Observer(fx.Interpreter):
    """Runs calibration batches through the traced model and keeps what lambda needs: the per-channel maxima of
    the ``watch``-ed nodes (all their values with a ``percentile``), every output shape and the images' max."""

    def __init__(self, gm: fx.GraphModule, watch: set[str], percentile: float | None):
        super().__init__(gm)
        self.watch, self.keep, self.percentile = watch, percentile is not None, percentile
        self.shapes: dict[str, tuple] = {}
        self.amax: dict[str, Tensor] = {}
        self.values: dict[str, list[Tensor]] = {}
        self.in_max: Tensor | None = None  # max |x| of the images (on their device)

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, Tensor):
            self.shapes.setdefault(n.name, tuple(out.shape[1:]))
            if n.op == "placeholder" or n.name in self.watch:
                check_calibration(out.detach(), "the images" if n.op == "placeholder" else
                                  f"the output of {n.target if n.op == 'call_module' else n.name}")
            if n.op == "placeholder":
                m = out.detach().abs().max().double()
                self.in_max = m if self.in_max is None else torch.maximum(self.in_max, m)
            if n.name in self.watch:
                a = out.detach().double().clamp(min=0)
                if self.keep:
                    self.values.setdefault(n.name, []).append(a)
                m = a.amax(dim=(0, 2, 3)) if a.dim() == 4 else a.reshape(a.shape[0], -1).amax(0)
                self.amax[n.name] = m if n.name not in self.amax else torch.maximum(self.amax[n.name], m)
        return out

    def lam_of(self, node_name: str, layer_wise: bool) -> Tensor:
        """Lambda of a watched node's output: per channel, or one for the layer (``layer_wise``)."""
        if self.percentile is not None:
            y = torch.cat(self.values[node_name])
            lam = activation_scale(y, signed=False, channel_wise=not layer_wise, percentile=self.percentile).double()
        else:
            m = self.amax[node_name]
            lam = m.max() if layer_wise else m
            lam = torch.where(lam > 0, lam, torch.ones_like(lam))
        return lam.expand(self.shapes[node_name][0]).clone()


def observe(gm: fx.GraphModule, modules: dict, data: Tensor | Iterable, percentile: float | None, batch_size: int,
            dtype: torch.dtype) -> Observer:
    """Run the calibration ``data`` (cast to the model's ``dtype``) through ``gm``, watching every ReLU and
    average-pool output."""
    watch = {n.name for n in gm.graph.nodes if _is_relu(n, modules) or is_avgpool(n, modules)}
    obs = Observer(gm, watch, percentile)
    seen = 0
    with torch.no_grad():
        for xb in batches(data, batch_size):
            obs.run(xb.to(dtype))
            seen += xb.shape[0]
    if seen == 0:
        raise ValueError("no calibration images")
    return obs
