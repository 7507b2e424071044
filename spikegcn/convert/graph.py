"""Converting PyG models built from GCNConv, Linear and ReLU: capture -> observe -> calibrate -> build.

1. **Capture**: ``torch.fx`` traces the model's forward with ``GCNConv``, ``Linear``, ``ReLU`` and ``Dropout``
   as leaves (ReLU as a module, ``F.relu`` or ``x.relu()``). Anything else that touches a hidden activation
   is refused with an error that names it.
2. **Observe**: forward hooks record every layer's output (and each ``GCNConv``'s message-passing output) on
   the calibration data.
3. **Calibrate**: lambda per channel (or per layer) = max or percentile of the ReLU output, or of ``|y|`` for
   layers with no ReLU after them (signed neurons, spec A14).
4. **Build**: each layer becomes its spiking twin (ReLU absorbed into the neuron, dropout dropped, the last
   layer integrates without spiking); the graph input is encoded by a calibrated :class:`PhaseEncoder`
   unless it is featureless (``X = I``). The result keeps the model's forward signature.
"""
from __future__ import annotations

import inspect
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.dense.linear import Linear as PygLinear

from ..coding import PhaseCode
from ..energy import FP32, EnergyCosts, LayerStats, energy_report
from ..nn.base import SpikingMixin, _is_identity
from ..nn.encoder import PhaseEncoder
from ..nn.aggregation import SpikingAggregation
from ..nn.gcn_conv import SpikingGCNConv
from ..nn.linear import SpikingLinear
from ..simulate import check_mode
from .observers import activation_scale

LAYERS = (GCNConv, nn.Linear, PygLinear)
_RELU_FUNCS = (F.relu, torch.relu, torch.relu_)
_PASS_FUNCS = (F.dropout,)


class UnsupportedModuleError(TypeError):
    """The model contains a module or operation the converter does not know how to make spiking."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LAYERS + (nn.ReLU, nn.Dropout, nn.Identity)) or super().is_leaf_module(m, qualname)


class SpikingModel(fx.GraphModule):
    """A converted model: same forward signature, plus spike statistics and the energy report."""

    def spiking_layers(self) -> list[tuple[str, nn.Module]]:
        """Top-level spiking layers in execution order (a SpikingGCNConv's inner layers are its own)."""
        out, convs = [], []
        for n, m in self.named_modules():
            if any(n.startswith(c + ".") for c in convs):
                continue
            if isinstance(m, (SpikingGCNConv, SpikingLinear)):
                out.append((n, m))
                if isinstance(m, SpikingGCNConv):
                    convs.append(n)
        return out

    def layer_stats(self) -> list[LayerStats]:
        """Statistics of the last forward pass, one entry per neuron layer (GCNConv gives two: mp, agg)."""
        out = []
        for name, m in self.spiking_layers():
            for st in m.stats:
                st = LayerStats(**{**st.__dict__})
                st.name = f"{name}.{st.name}" if isinstance(m, SpikingGCNConv) else name
                out.append(st)
        return out

    def energy(self, costs: EnergyCosts = FP32) -> dict:
        return energy_report(self.layer_stats(), costs)

    def set_mode(self, mode: str) -> "SpikingModel":
        check_mode(mode)
        for _, m in self.spiking_layers():
            if hasattr(m, "set_mode"):  # composite layers pass the mode on to their parts
                m.set_mode(mode)
            else:
                m.mode = mode
        return self

    def set_code(self, code: PhaseCode) -> "SpikingModel":
        for m in self.modules():
            if isinstance(m, SpikingMixin):
                m.code = code
        return self


def _call_args(model: nn.Module, data: Any) -> tuple[tuple, dict]:
    """Map a PyG ``Data`` object (or a tuple/dict of arguments) onto the model's forward parameters."""
    if isinstance(data, tuple):
        return data, {}
    if isinstance(data, dict):
        return (), data
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) == 1 and not hasattr(data, params[0].name):
        return (data,), {}
    kwargs = {}
    for p in params:
        if hasattr(data, p.name) and getattr(data, p.name) is not None:
            kwargs[p.name] = getattr(data, p.name)
        elif p.default is p.empty:
            if p.name == "x":  # featureless graph: X = I
                kwargs["x"] = None
            else:
                raise ValueError(f"calibration data has no attribute {p.name!r} needed by {type(model).__name__}.forward")
    return (), kwargs


def _is_relu(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.ReLU)
    if node.op == "call_function":
        return node.target in _RELU_FUNCS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_passthrough(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], (nn.Dropout, nn.Identity))
    if node.op == "call_function":
        return node.target in _PASS_FUNCS
    return False


def convert_graph_model(model: nn.Module, data: Any, code: PhaseCode, mode: str = "exact",
                        percentile: float | None = None, channel_wise: bool = True, variant: str = "signed",
                        input_coding: str = "binary", backend: str = "auto") -> SpikingModel:
    check_mode(mode)
    model = model.eval()
    gm = fx.GraphModule(model, _Tracer().trace(model), class_name=type(model).__name__)
    modules = dict(gm.named_modules())
    graph = gm.graph

    layer_nodes = [n for n in graph.nodes if n.op == "call_module" and isinstance(modules[n.target], LAYERS)]
    if not layer_nodes:
        raise UnsupportedModuleError(f"{type(model).__name__} has no GCNConv or Linear layer to convert")

    # ---- what follows each layer: ReLU (unsigned hidden), another layer (signed hidden) or the output
    def consumers(node: fx.Node) -> list[fx.Node]:
        out = []
        for u in node.users:
            out.extend(consumers(u) if _is_passthrough(u, modules) else [u])
        return out

    layer_set = set(layer_nodes)

    def _reaches_layer(node: fx.Node) -> bool:
        seen, todo = set(), list(node.users)
        while todo:
            u = todo.pop()
            if u in layer_set:
                return True
            if u not in seen:
                seen.add(u)
                todo.extend(u.users)
        return False

    kinds: dict[str, str] = {}
    for n in layer_nodes:
        users = consumers(n)
        if users and all(_is_relu(u, modules) for u in users):
            kinds[n.name] = "relu"
            nxt = [v for u in users for v in consumers(u)]
        else:
            kinds[n.name] = "signed"
            nxt = users
        if not all(v.op == "call_module" and isinstance(modules[v.target], LAYERS) for v in nxt):
            kinds[n.name] = "output"
            if len(nxt) == 0:
                raise UnsupportedModuleError(f"layer {n.target} has no consumer")
            # an output layer's value may go through anything, but never on into another layer
            for v in nxt:
                if not (v.op == "call_module" and isinstance(modules[v.target], LAYERS)) and _reaches_layer(v):
                    raise UnsupportedModuleError(
                        f"cannot convert {_describe(v, modules)} after layer {n.target}: between spiking layers "
                        f"only ReLU and dropout are supported")

    # every non-layer node that touches a hidden (spiking) value must be a ReLU or a pass-through
    hidden = {n for n in layer_nodes if kinds[n.name] != "output"}
    frontier = list(hidden)
    while frontier:
        n = frontier.pop()
        for u in n.users:
            if u in hidden or (u.op == "call_module" and isinstance(modules[u.target], LAYERS)):
                continue
            if _is_relu(u, modules) or _is_passthrough(u, modules):
                hidden.add(u)
                frontier.append(u)
                continue
            raise UnsupportedModuleError(
                f"cannot convert {_describe(u, modules)}: between spiking layers only ReLU and dropout are supported")

    # ---- observe
    records: dict[str, Tensor] = {}
    hooks = []
    for n in layer_nodes:
        mod = modules[n.target]
        hooks.append(mod.register_forward_hook(lambda m, i, o, key=n.name: records.__setitem__(key, o.detach())))
        if isinstance(mod, GCNConv):
            hooks.append(mod.lin.register_forward_hook(
                lambda m, i, o, key=n.name + ".mp": records.__setitem__(key, o.detach())))
            if variant == "agg_first":
                hooks.append(mod.register_forward_pre_hook(
                    lambda m, a, kw, key=n.name + ".in": records.__setitem__(key, (a, kw)), with_kwargs=True))
    args, kwargs = _call_args(model, data)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()

    # ---- build
    first_input = None
    for n in layer_nodes:
        mod = modules[n.target]
        kind = kinds[n.name]
        out_kind = "potential" if kind == "output" else "spikes"
        y = records[n.name]
        if isinstance(mod, GCNConv):
            if variant == "agg_first":
                mp_scale = _agg_first_scale(mod, *records[n.name + ".in"], channel_wise=channel_wise,
                                            percentile=percentile)
            else:
                mp_scale = activation_scale(records[n.name + ".mp"], signed=(variant == "signed"),
                                            channel_wise=channel_wise, percentile=percentile)
            scale = activation_scale(y, signed=(kind == "signed"), channel_wise=channel_wise, percentile=percentile)
            new = SpikingGCNConv.from_gcnconv(mod, code=code, mp_scale=mp_scale, scale=scale, variant=variant,
                                              mode=mode, output=out_kind, backend=backend)
            if kind == "signed":
                new.aggr.signed = True
        else:
            scale = activation_scale(y, signed=(kind == "signed"), channel_wise=channel_wise, percentile=percentile)
            new = SpikingLinear.from_linear(mod, scale=scale, code=code, signed=(kind == "signed"), mode=mode,
                                            output=out_kind, backend=backend)
        _set_module(gm, n.target, new)

    # ---- rewrite: drop ReLU / dropout on hidden values, encode the graph input
    for n in list(graph.nodes):
        if n in hidden and n not in layer_nodes:
            n.replace_all_uses_with(n.args[0])
            graph.erase_node(n)
    x_node = next((n for n in graph.nodes if n.op == "placeholder" and n.target == "x"), None)
    if x_node is None:
        x_node = next(n for n in graph.nodes if n.op == "placeholder")
    x_value = kwargs.get(x_node.target, args[0] if args else None)
    if x_value is not None and not (x_value.layout != torch.strided and _is_identity(x_value)):
        enc = PhaseEncoder(T=code.T, coding=input_coding, code=code)
        enc.calibrate(x_value)
        gm.add_module("input_encoder", enc)
        users = [u for u in x_node.users if u in layer_nodes]
        with graph.inserting_after(x_node):
            e = graph.call_module("input_encoder", (x_node,))
        for u in users:
            u.replace_input_with(x_node, e)
    graph.lint()
    out = SpikingModel(gm, graph, class_name="Spiking" + type(model).__name__)
    return out


def _describe(u: fx.Node, modules: dict) -> str:
    if u.op == "call_module":
        return f"module {u.target} ({type(modules[u.target]).__name__})"
    return f"{u.op} {getattr(u.target, '__name__', u.target)}"


def _set_module(root: nn.Module, target: str, new: nn.Module) -> None:
    *path, last = target.split(".")
    parent = root
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def _agg_first_scale(conv: GCNConv, args: tuple, kwargs: dict, channel_wise: bool,
                     percentile: float | None) -> Tensor:
    """Lambda of the aggregation neurons A-hat X that the 'agg_first' order puts before the linear map."""
    names = ["x", "edge_index", "edge_weight"]
    bound = dict(zip(names, args), **kwargs)
    x = bound["x"]
    featureless = x is None or (x.layout != torch.strided and _is_identity(x))
    n = conv.in_channels if x is None else x.shape[0]
    agg = SpikingAggregation(conv.in_channels, improved=conv.improved, add_self_loops=conv.add_self_loops,
                             normalize=conv.normalize)
    op = agg.graph_op(bound["edge_index"], bound.get("edge_weight"), n)
    if featureless:
        # A-hat I = A-hat: the neurons are its non-zeros, channel = column
        if percentile is not None:
            raise ValueError("percentile calibration is not supported for the aggregation-first layer of a "
                             "featureless (X = I) model; use the max (percentile=None)")
        adj = op.adj
        vals = adj.values()
        if not channel_wise:
            return vals.max().clamp_min(torch.finfo(vals.dtype).tiny)
        col = adj.col_indices().long()
        lam = torch.zeros(adj.shape[1], dtype=vals.dtype).scatter_reduce(0, col, vals, "amax", include_self=True)
        return torch.where(lam > 0, lam, torch.ones_like(lam))
    if x.layout != torch.strided:
        x = x.to_dense()
    ahat_x = torch.sparse.mm(op.adj, x.detach().float())
    return activation_scale(ahat_x, signed=bool((ahat_x < 0).any()), channel_wise=channel_wise, percentile=percentile)
