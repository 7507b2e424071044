"""Converting PyG models: place the neurons on the traced graph (analyse), then build the spiking twin.

The model is traced by :mod:`.capture` and observed by :mod:`.prepare`; this module decides where neurons sit
and rewrites the graph:

* every **layer** node (a PyG layer with a rule, ``Linear``, GIN's aggregation, a global pool, a join ``a + b``,
  JumpingKnowledge ``"max"``) becomes one (``GCNConv``: two) layer(s) of one-spike neurons. A ``BatchNorm1d``
  right after it is folded into it. Its neurons are **unsigned** when every consumer is a ReLU (the ReLU is
  absorbed), **signed** when it feeds other layers directly, and an integrating **output** (no spikes) when its
  value never reaches another layer (anything may follow it then: log_softmax, a loss);
* ``torch.cat`` of layer outputs (and JumpingKnowledge ``"cat"``) is a **route**: the spike streams are put side
  by side, no neurons;
* dropout and identities are dropped (eval), ``relu(relu(x))`` is one ReLU;
* the input features reach the first layers through a :class:`~spikegcn.nn.PhaseEncoder` (dropout or a ReLU may
  come before it); a featureless ``x=None`` or sparse identity passes as it is.

Everything else between layers, or between the input features and a layer, is refused naming it.
"""
from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch_geometric.nn import JumpingKnowledge
from torch_geometric.nn.dense.linear import Linear as PygLinear

from ..coding import PhaseCode
from ..energy import FP32, EnergyCosts, LayerStats, energy_report
from ..nn.base import SpikingMixin
from ..nn.encoder import PhaseEncoder
from ..nn.gcn_conv import SpikingGCNConv
from ..nn.graph_layer import SpikingGraphLayer
from ..nn.linear import SpikingLinear
from ..simulate import check_mode
from .capture import POOLS, UnsupportedModuleError, describe, gin_aggregate, refuse_sampling_call
from .rules import FUNCTION_STREAMS, rule_for

__all__ = ["SpikingModel", "Plan", "LayerInfo", "analyse", "stream_nodes", "UnsupportedModuleError"]

_RELU_FUNCS = (F.relu, torch.relu, torch.relu_)
_PASS_FUNCS = (F.dropout, F.dropout1d, F.alpha_dropout)
_ADD_FUNCS = (operator.add, torch.add)


@dataclass
class LayerInfo:
    kind: str  # "relu", "signed", "output" or "route"
    site: str  # the node whose value the neurons take (the layer, or the BatchNorm folded into it)
    fn: str | None = None  # function-call layers: "join", "cat", "gin", "pool_add", "pool_mean", "pool_max"
    bn: str | None = None  # target of the BatchNorm1d folded into the layer
    post: str | None = None  # GIN's sum, add/mean pool: the node of the Linear after it, fused into the layer
    relus: list[str] = field(default_factory=list)


@dataclass
class Plan:
    layers: dict[str, LayerInfo]  # node name -> where its neurons sit (graph order)
    inputs: list[str]  # nodes carrying input features into layers (each gets a PhaseEncoder)


class _FloatProp(fx.Interpreter):
    """One run on the example: which nodes hold floating-point feature tensors (and their shapes)."""

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        n.meta["float"] = isinstance(out, Tensor) and out.is_floating_point() and out.layout == torch.strided
        n.meta["shape"] = tuple(out.shape) if isinstance(out, Tensor) else None
        return out


def _is_relu(node: fx.Node, modules: dict) -> bool:
    """A ReLU as a module, ``F.relu``/``torch.relu`` or ``x.relu()`` (the CNN converter uses it too)."""
    return _role(node, modules) == "relu"


def _role(n: fx.Node, modules: dict) -> str:
    if n.op == "call_module":
        m = modules[n.target]
        if isinstance(m, nn.ReLU):
            return "relu"
        if isinstance(m, (nn.modules.dropout._DropoutNd, nn.Identity)):
            return "pass"
        if isinstance(m, nn.BatchNorm1d):
            return "bn"
        if isinstance(m, JumpingKnowledge) and m.mode == "cat":
            return "route"
        return "layer" if rule_for(m) is not None else "other"
    if n.op == "call_method":
        return "relu" if n.target in ("relu", "relu_") else "other"
    if n.op != "call_function":
        return n.op
    fn = _fn_kind(n)
    return {"relu": "relu", "pass": "pass", "cat": "route", None: "other"}.get(fn, "layer")


def _fn_kind(n: fx.Node) -> str | None:
    t = n.target
    if t in _RELU_FUNCS:
        return "relu"
    if t in _PASS_FUNCS:
        return "pass"
    if t is gin_aggregate:
        return "gin"
    if t in POOLS:
        return "pool_" + POOLS[t]
    if t is torch.cat and n.meta.get("float"):
        return "cat"
    if t in _ADD_FUNCS and len(n.args) == 2 and all(isinstance(a, fx.Node) and a.meta.get("float") for a in n.args):
        if n.args[0].meta.get("shape") == n.args[1].meta.get("shape"):
            return "join"
    return None


def stream_nodes(n: fx.Node, modules: dict) -> list[fx.Node]:
    """The arguments of a layer/route node that carry node features (spikes in the converted model)."""
    if n.op == "call_module":
        m = modules[n.target]
        sig = inspect.signature(m.forward)
        bound = sig.bind(*n.args, **n.kwargs).arguments
        first = next(iter(sig.parameters))  # e.g. a Linear subclass whose forward names its input "x"
        vals = [bound.get(a if a in sig.parameters else first) for a in rule_for(m).stream_args]
    else:
        vals = [n.args[i] if i < len(n.args) else n.kwargs.get("x") for i in FUNCTION_STREAMS[_fn_kind(n)]]
    out: list = []
    for v in vals:
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return [v for v in out if isinstance(v, fx.Node)]


def analyse(gm: fx.GraphModule, example_inputs: list, featureless: tuple[str, ...] = ()) -> Plan:
    """Normalise the traced graph (drop dropout, merge ReLUs) and place the neurons; refuse what cannot be.
    ``featureless``: placeholders carrying X = I (no input encoder; the layers take it as IdentitySpikes)."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    _FloatProp(gm).run(*example_inputs)
    for n in graph.nodes:
        if n.op == "placeholder" and n.target in featureless:
            n.meta["float"] = False
    for n in list(graph.nodes):
        role = _role(n, modules)
        arg = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
        if role == "pass" or (role == "relu" and arg is not None and _role(arg, modules) == "relu"):
            n.replace_all_uses_with(n.args[0])
            graph.erase_node(n)
    roles = {n: _role(n, modules) for n in graph.nodes}
    layers = [n for n in graph.nodes if roles[n] == "layer"]
    routes = [n for n in graph.nodes if roles[n] == "route"]
    if not layers:
        raise UnsupportedModuleError(f"{type(gm).__name__} has no GCNConv or Linear layer (nor another supported "
                                     f"PyG layer) to convert")
    plan = Plan(layers={}, inputs=[])
    fused = {n: _fused_linear(n, modules) for n in layers
             if n.op == "call_function" and _fn_kind(n) in ("gin", "pool_add", "pool_mean")}
    for n in layers:
        if n not in fused.values():
            plan.layers[n.name] = _place(n, roles, modules, fused.get(n))
    for r in routes:
        bad = [u for u in r.users if roles[u] not in ("layer", "route")]
        if bad:
            raise UnsupportedModuleError(f"cannot convert {describe(bad[0], modules)} after {describe(r, modules)}: "
                                         f"concatenated spike streams must feed a layer")
        plan.layers[r.name] = LayerInfo("route", r.name, fn=_fn_kind(r) if r.op == "call_function" else None)
    for n in graph.nodes:
        if roles[n] == "bn" and not any(i.bn == n.target for i in plan.layers.values()):
            raise UnsupportedModuleError(f"cannot convert {describe(n, modules)}: a BatchNorm folds only into the "
                                         f"layer with weights right before it (layer -> BatchNorm -> ReLU)")
    _find_inputs(plan, graph, roles, modules)
    return plan


def _fused_linear(n: fx.Node, modules: dict) -> fx.Node | None:
    """The ``Linear`` right after GIN's sum or an add/mean pool (its only consumer), which the linear function
    fuses with: one synaptic operator, no neurons in between."""
    users = list(n.users)
    if len(users) == 1 and users[0].op == "call_module" and users[0].args[:1] == (n,) \
            and isinstance(modules[users[0].target], (nn.Linear, PygLinear)):
        return users[0]
    return None


def _place(n: fx.Node, roles: dict, modules: dict, post: fx.Node | None = None) -> LayerInfo:
    fn = _fn_kind(n) if n.op == "call_function" else None
    out = post if post is not None else n
    site, bn = out, None
    if len(out.users) == 1 and roles[next(iter(out.users))] == "bn":
        site = next(iter(out.users))
        bn = site.target
    users = list(site.users)
    relus = [u for u in users if roles[u] == "relu"]
    if relus and len(relus) != len(users):
        raise UnsupportedModuleError(f"the output of {describe(n, modules)} is used both with and without ReLU")
    nxt = [v for r in relus for v in r.users] if relus else users
    hidden = [roles[v] in ("layer", "route") for v in nxt]
    if nxt and all(hidden):
        kind = "relu" if relus else "signed"
    elif not any(hidden) and not any(_reaches_layer(v, roles) for v in nxt):
        kind = "output"
    else:
        bad = next((v for v, h in zip(nxt, hidden) if not h), nxt[0] if nxt else n)
        raise UnsupportedModuleError(
            f"cannot convert {describe(bad, modules)} after {describe(n, modules)}: between spiking layers only "
            f"ReLU, dropout, BatchNorm after a layer, +, torch.cat and the supported PyG layers are allowed")
    return LayerInfo(kind, site.name, fn=fn, bn=bn, relus=[r.name for r in relus],
                     post=post.name if post is not None else None)


def _reaches_layer(node: fx.Node, roles: dict) -> bool:
    seen, todo = set(), [node]
    while todo:
        u = todo.pop()
        if roles.get(u) in ("layer", "route"):
            return True
        if u not in seen:
            seen.add(u)
            todo.extend(u.users)
    return False


def _find_inputs(plan: Plan, graph: fx.Graph, roles: dict, modules: dict) -> None:
    nodes = {n.name: n for n in graph.nodes}
    streams: dict[fx.Node, fx.Node] = {}  # value node carrying spikes -> its layer
    for name, info in plan.layers.items():
        outs = [nodes[r] for r in info.relus] if info.kind == "relu" else [nodes[info.site]]
        if info.kind != "output":
            streams.update({o: nodes[name] for o in outs})
    for name, info in plan.layers.items():
        n = nodes[name]
        args = stream_nodes(n, modules)
        for s in args:
            if s in streams:
                continue
            t = s
            while roles[t] == "relu":
                t = t.args[0]
            if t.op != "placeholder":
                raise UnsupportedModuleError(
                    f"cannot convert {describe(t, modules)} on the input of {describe(n, modules)}: it is not a "
                    f"ReLU-linear map (only dropout and ReLU may come between the input features and a layer)")
            if info.kind == "route":
                raise UnsupportedModuleError(f"cannot convert {describe(n, modules)}: only layer outputs can be "
                                             f"concatenated as spike streams, not the input features")
            if s.meta.get("float") and s.name not in plan.inputs:
                plan.inputs.append(s.name)
        for v in streams:
            if v in n.all_input_nodes and v not in args:
                raise UnsupportedModuleError(f"the output of {describe(streams[v], modules)} is used as a graph "
                                             f"argument of {describe(n, modules)}, not as its features")


class SpikingModel(fx.GraphModule):
    """A converted model: same forward signature, plus spike statistics and the energy report."""

    def __call__(self, *args, **kwargs):
        refuse_sampling_call(self, args, kwargs)  # a BasicGNN's num_sampled_* are fixed to None when traced
        return super().__call__(*args, **kwargs)

    def spiking_layers(self) -> list[tuple[str, nn.Module]]:
        """Top-level spiking layers in execution order (a SpikingGCNConv's inner layers are its own)."""
        out: list[tuple[str, nn.Module]] = []
        convs: list[str] = []
        order = {n.target: i for i, n in enumerate(self.graph.nodes) if n.op == "call_module"}
        for n, m in self.named_modules():
            if any(n.startswith(c + ".") for c in convs):
                continue
            if isinstance(m, (SpikingGCNConv, SpikingLinear, SpikingGraphLayer)):
                out.append((n, m))
                if isinstance(m, SpikingGCNConv):
                    convs.append(n)
        return sorted(out, key=lambda nm: order.get(nm[0], len(order)))

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
            m.set_mode(mode)  # SpikingMixin's; a composite layer passes it on to its parts
        return self

    def set_code(self, code: PhaseCode) -> "SpikingModel":
        """Use ``code`` (T, Q, shift, Tw) in every neuron layer; the input encoders follow ``code.T`` (lambda does
        not depend on the code, so this equals converting with ``code``)."""
        if not isinstance(code, PhaseCode):
            raise TypeError(f"code must be a PhaseCode, got {type(code).__name__}")
        for m in self.modules():
            if isinstance(m, SpikingMixin):
                m.code = code
            elif isinstance(m, PhaseEncoder):
                m.T, m.code = code.T, code
        return self

    def inference(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None, chunk_size: int = 65536,
                  storage: str | None = None, progress: bool = False) -> Tensor:
        """Layer-wise inference over blocks of target nodes, int8 codes between layers (bounded memory);
        bit-identical to ``self(x, edge_index)``. See :func:`spikegcn.inference.layerwise`."""
        from ..inference import layerwise

        return layerwise(self, x, edge_index, edge_weight, chunk_size=chunk_size, storage=storage, progress=progress)

