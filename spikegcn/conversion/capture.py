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

import contextlib
import functools
import inspect
import sys
from typing import Any

from torch import Tensor, fx, nn
from torch.fx._symbolic_trace import _assert_is_none
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

    def trace(self, root, concrete_args=None):
        with _pools_as_leaves(root):
            return super().trace(root, concrete_args)

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


def _leaf_call(fn):
    """``fn`` that records one ``call_function`` node when called on proxies (a traced pool is a layer)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        proxy = next((a for a in (*args, *kwargs.values()) if isinstance(a, fx.Proxy)), None)
        if proxy is None:
            return fn(*args, **kwargs)
        return proxy.tracer.create_proxy("call_function", fn, args, kwargs)
    return wrapped


@contextlib.contextmanager
def _pools_as_leaves(root: nn.Module):
    """torch.fx wraps the pools only where a forward names them as globals; wrap them too where they are reached
    as attributes (``torch_geometric.nn.global_mean_pool(...)``, ``self.pool = global_mean_pool``)."""
    owners = [m.__dict__ for name, m in list(sys.modules.items()) if name.startswith("torch_geometric")
              and m is not None] + [m.__dict__ for m in root.modules()]
    saved = [(d, k, v) for d in owners for k, v in list(d.items()) if _is_pool(v)]
    try:
        for d, k, v in saved:
            d[k] = _leaf_call(v)
        yield
    finally:
        for d, k, v in saved:
            d[k] = v


def _is_pool(v: Any) -> bool:
    try:
        return v in POOLS
    except TypeError:  # unhashable
        return False


def trace(model: nn.Module, example_kwargs: dict) -> fx.GraphModule:
    """Trace ``model`` (sampling arguments of BasicGNN-style forwards fixed to ``None``)."""
    sig = inspect.signature(model.forward).parameters
    refuse_sampling(example_kwargs)
    concrete = {n: None for n in sig if n.startswith("num_sampled_")}
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
    # fx checks each concrete argument with a wrapped ``_assert_is_none`` call; its generated code re-registers the
    # wrap when a saved model is loaded, under a name later traces cannot find (every fx trace in that process then
    # fails with a KeyError). The arguments are fixed to None by construction: drop the checks.
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is _assert_is_none and not node.users:
            graph.erase_node(node)
    return fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)


def refuse_sampling(arguments: dict) -> None:
    """BasicGNN's neighbour-sampling trimming arguments are fixed to ``None`` in the converted model: refuse values."""
    bad = [k for k, v in arguments.items() if k.removesuffix("_1").startswith("num_sampled_") and v is not None]
    if bad:
        raise ValueError(f"{bad[0].removesuffix('_1')} (neighbour-sampling trimming) is not supported by the "
                         f"converted model: run it on the sampled subgraph without it, or on a large graph use "
                         f"layer-wise inference, snn.inference(x, edge_index)")


def refuse_sampling_call(module: nn.Module, args: tuple, kwargs: dict) -> None:
    """:func:`refuse_sampling` on a call's arguments, passed by name or by position."""
    refuse_sampling(kwargs)
    if len(args) > 1:
        refuse_sampling(dict(zip(inspect.signature(module.forward).parameters, args)))


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


__all__ = ["UnsupportedModuleError", "GraphTracer", "trace", "refuse_unsupported", "refuse_sampling",
           "refuse_sampling_call", "gin_aggregate", "describe", "POOLS"]
