"""Capture: refuse what is not a ReLU-linear map, then trace the model with torch.fx (PyG layers as leaves).

* **Refusals before tracing** (:func:`refuse_unsupported`): every submodule is checked against the conversion
  rules first, so attention layers, LayerNorm/GraphNorm, non-ReLU activations and PyG layers without a rule are
  refused with :class:`UnsupportedModuleError` naming the module, its type and why, before torch.fx or PyG
  internals can fail on them.
* **Tracing** (:class:`GraphTracer`): the PyG layers with a rule are leaves; ``global_{add,mean,max}_pool`` are
  leaf functions; ``GINConv`` is split into its aggregation (:func:`gin_aggregate`, a leaf) and its MLP, traced
  through like any ``Linear``/``BatchNorm``/``ReLU`` stack; BasicGNN and MLP models are traced through with their
  neighbour-sampling arguments fixed to ``None``. A trace that fails (data-dependent control flow in a custom
  module) is refused naming the module.
"""
from __future__ import annotations

import inspect
import sys
from typing import Any

from torch import Tensor, fx, nn
from torch_geometric.nn import GINConv, JumpingKnowledge, MessagePassing
from torch_geometric.nn.pool import global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.utils import scatter

from .rules import RULES, rule_for


class UnsupportedModuleError(TypeError):
    """The model contains a module or operation the converter does not know how to make spiking."""


POOLS = {global_add_pool: "add", global_mean_pool: "mean", global_max_pool: "max"}

_WHY_ATTENTION = "attention coefficients are a softmax of the input, not a fixed linear map"
_REFUSED = {
    "GATConv": _WHY_ATTENTION, "GATv2Conv": _WHY_ATTENTION, "TransformerConv": _WHY_ATTENTION,
    "SuperGATConv": _WHY_ATTENTION, "AGNNConv": _WHY_ATTENTION,
    "LayerNorm": "it divides by a statistic of the input itself, not a fixed affine map",
    "GraphNorm": "it divides by a statistic of each graph's input, not a fixed affine map",
    "InstanceNorm": "it divides by a statistic of each graph's input, not a fixed affine map",
    "PairNorm": "it divides by a statistic of the input itself, not a fixed affine map",
}
_OUTPUT_ACTIVATIONS = (nn.LogSoftmax, nn.Softmax)  # allowed after the output layer only (checked on the graph)


def gin_aggregate(x: Tensor, edge_index: Tensor, eps: Tensor) -> Tensor:
    """``GINConv``'s input to its MLP: :math:`(1+\\epsilon)x_i + \\sum_{j \\to i} x_j` (as PyG computes it)."""
    out = scatter(x.index_select(0, edge_index[0]), edge_index[1], 0, dim_size=x.shape[0], reduce="sum")
    return out + (1 + eps) * x


def refuse_unsupported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModuleError` for the first submodule that cannot be one-spike."""
    for name, m in model.named_modules():
        where = f"module {name or '<root>'} ({type(m).__name__})"
        why = _REFUSED.get(type(m).__name__)
        if why is None and type(m).__module__ == "torch.nn.modules.activation" \
                and not isinstance(m, (nn.ReLU,) + _OUTPUT_ACTIVATIONS):
            why = "only ReLU activations become one-spike neurons (a spike carries a value, not a curve)"
        if why is None and isinstance(m, JumpingKnowledge) and m.mode not in ("cat", "max"):
            why = f"JumpingKnowledge mode {m.mode!r} weighs layers by an attention of the input"
        rule = rule_for(m)
        if why is None and rule is not None:
            why = rule.check(m)
        if why is None and rule is None and isinstance(m, MessagePassing) and not isinstance(m, GINConv):
            supported = ", ".join(sorted(t.__name__ for t in RULES if issubclass(t, MessagePassing)))
            why = f"no conversion rule for this PyG layer (supported: {supported})"
        if why is not None:
            raise UnsupportedModuleError(f"cannot convert {where}: {why}")


class GraphTracer(fx.Tracer):
    """torch.fx tracer with PyG layers and pools as leaves and ``GINConv`` split into aggregation + MLP."""

    def __init__(self):
        super().__init__(autowrap_functions=tuple(POOLS) + (gin_aggregate,))

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, GINConv):
            return False
        return rule_for(m) is not None or isinstance(m, (nn.ReLU, nn.Dropout, nn.Identity) + _OUTPUT_ACTIVATIONS) \
            or super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward, args: tuple, kwargs: dict) -> Any:
        if isinstance(m, GINConv):
            bound = inspect.signature(m.forward).bind(*args, **kwargs)
            x, edge_index = bound.arguments["x"], bound.arguments["edge_index"]
            eps = self.create_proxy("get_attr", self.path_of_module(m) + ".eps", (), {})
            agg = self.create_proxy("call_function", gin_aggregate, (x, edge_index, eps), {})
            return self.call_module(m.nn, m.nn.forward, (agg,), {})
        return super().call_module(m, forward, args, kwargs)


def trace(model: nn.Module, example_kwargs: dict) -> fx.GraphModule:
    """Trace ``model`` (sampling arguments of BasicGNN-style forwards fixed to ``None``)."""
    sig = inspect.signature(model.forward).parameters
    concrete = {n: None for n, p in sig.items() if n.startswith("num_sampled_") and n not in example_kwargs}
    tracer = GraphTracer()
    try:
        graph = tracer.trace(model, concrete_args=concrete or None)
    except UnsupportedModuleError:
        raise
    except Exception as err:  # torch.fx / PyG internals: name the module whose forward failed
        where = _failing_module(model, sys.exc_info()[2])
        raise UnsupportedModuleError(
            f"cannot trace {where}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            f"(data-dependent control flow or an untraceable operation is not a fixed ReLU-linear map)") from err
    return fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)


def _failing_module(model: nn.Module, tb) -> str:
    names = {id(m): n for n, m in model.named_modules()}
    where = f"module <root> ({type(model).__name__})"
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if isinstance(obj, nn.Module) and id(obj) in names:
            where = f"module {names[id(obj)] or '<root>'} ({type(obj).__name__})"
        tb = tb.tb_next
    return where


def describe(node: fx.Node, modules: dict) -> str:
    """``module NAME (TYPE)`` or ``call_function NAME`` for error messages."""
    if node.op == "call_module":
        return f"module {node.target} ({type(modules[node.target]).__name__})"
    return f"{node.op} {getattr(node.target, '__name__', node.target)}"


__all__ = ["UnsupportedModuleError", "GraphTracer", "trace", "refuse_unsupported", "gin_aggregate", "describe",
           "POOLS"]
