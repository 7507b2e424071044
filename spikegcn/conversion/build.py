"""Build the spiking twin of a prepared graph model: observed lambdas -> spiking layers, graph rewritten."""
from __future__ import annotations

import torch
from torch import Tensor, fx, nn
from torch_geometric.nn import GCNConv

from ..coding import PhaseCode
from ..nn.encoder import PhaseEncoder
from ..simulate import check_mode
from .graph import LayerInfo, Plan, SpikingModel, stream_nodes
from .prepare import Observer, PreparedGraphModule
from .rules import BuildContext, bn_affine, build_function_layer, fold_affine, resolve_lazy_channels, rule_for

__all__ = ["build", "gcn_scale", "input_encoder"]


def build(prepared: PreparedGraphModule, code: PhaseCode, mode: str = "exact", channel_wise: bool = True,
          input_coding: str = "binary", backend: str = "auto") -> SpikingModel:
    """The SNN of ``prepared`` (which stays as it is): every layer of its plan becomes its spiking twin."""
    check_mode(mode)
    plan: Plan = prepared.plan
    gm = fx.GraphModule(prepared, _copy_graph(prepared.graph), class_name=type(prepared).__name__)
    graph = gm.graph
    nodes = {n.name: n for n in graph.nodes}
    src_modules = dict(prepared.named_modules())
    for n in list(graph.nodes):  # observers out
        if n.op == "call_module" and isinstance(src_modules.get(n.target), Observer):
            n.replace_all_uses_with(n.args[0])
            graph.erase_node(n)
    _insert_encoders(gm, prepared, plan, nodes, src_modules, code, input_coding)
    for info in plan.layers.values():
        for r in (info.relus if info.kind == "relu" else []):
            nodes[r].replace_all_uses_with(nodes[r].args[0])
            graph.erase_node(nodes[r])
        if info.bn is not None:
            bn_node = nodes[info.site]
            bn_node.replace_all_uses_with(bn_node.args[0])
            graph.erase_node(bn_node)
    for name, info in plan.layers.items():
        new = _twin(prepared, src_modules, nodes[name], info, code, mode, channel_wise, backend)
        _install(gm, nodes[name], info, new)
    for n in list(graph.nodes):  # GIN's eps, read at conversion
        if n.op == "get_attr" and not n.users:
            graph.erase_node(n)
    graph.lint()
    return SpikingModel(gm, graph, class_name="Spiking" + type(prepared).__name__.removeprefix("Prepared"))


def _copy_graph(graph: fx.Graph) -> fx.Graph:
    new = fx.Graph()
    env: dict = {}
    out = new.graph_copy(graph, env)
    new.output(out)
    return new


def input_encoder(obs: Observer, code: PhaseCode, input_coding: str) -> PhaseEncoder:
    """The encoder of an observed input stream: lambda^0 = its largest |value| (0 maps to 1)."""
    enc = PhaseEncoder(T=code.T, coding=input_coding, code=code)
    m = torch.maximum(obs.pos, obs.neg).max()
    enc.scale = torch.where(m > 0, m, torch.ones_like(m)).clone()
    enc.calibrated.fill_(True)
    return enc


def _insert_encoders(gm, prepared, plan, nodes, modules, code, input_coding) -> None:
    for i, src in enumerate(plan.inputs):
        obs: Observer = prepared.get_submodule(f"observer_{src}")
        if not obs.seen:
            continue
        enc = input_encoder(obs, code, input_coding)
        name = "input_encoder" if i == 0 else f"input_encoder_{i}"
        gm.add_module(name, enc)
        s = nodes[src]
        with gm.graph.inserting_after(s):
            e = gm.graph.call_module(name, (s,))
        for lname in plan.layers:
            user = nodes[lname]
            if s in stream_nodes(user, modules):
                user.replace_input_with(s, e)


def _twin(prepared, modules, node: fx.Node, info: LayerInfo, code, mode, channel_wise, backend) -> nn.Module:
    if info.kind == "route":
        return build_function_layer("cat", None) if info.fn else rule_for(modules[node.target]).build(
            modules[node.target], None)
    obs: Observer = prepared.get_submodule(f"observer_{info.site}")
    scale = obs.scale(signed=info.kind != "relu", channel_wise=channel_wise)
    ctx = BuildContext(code, mode, backend, info.kind, scale, variant=getattr(prepared, "variant", "signed"))
    if info.fn is None:
        mod = modules[node.target]
        resolve_lazy_channels(mod, node.target)
        if isinstance(mod, GCNConv):
            ctx.extra["mp_scale"] = gcn_scale(prepared, node.target, ctx.variant, channel_wise)
        new = rule_for(mod).build(mod, ctx)
    else:
        if info.fn == "gin":
            ctx.extra["eps"] = _attr(prepared, node.args[2].target)
        if info.post is not None:
            ctx.extra["linear"] = modules[_node(node.graph, info.post).target]
        new = build_function_layer(info.fn, ctx)
    if info.bn is not None:
        a, c = bn_affine(modules[info.bn])
        try:
            fold_affine(new, a, c)
        except ValueError as err:
            from .capture import UnsupportedModuleError

            raise UnsupportedModuleError(f"cannot convert module {info.bn}: {err}") from None
    return new.to(device=scale.device, dtype=scale.dtype) if scale.is_floating_point() else new


def gcn_scale(prepared, target: str, variant: str, channel_wise: bool) -> Tensor:
    key = target.replace(".", "_")
    if variant == "agg_first":
        obs = prepared.get_submodule(f"observer_{key}_agg")
        return obs.scale(signed=obs.signed_seen, channel_wise=channel_wise)
    return prepared.get_submodule(f"observer_{key}_mp").scale(signed=variant == "signed", channel_wise=channel_wise)


def _attr(root: nn.Module, target: str):
    obj = root
    for p in target.split("."):
        obj = getattr(obj, p)
    return obj


def _install(gm: fx.GraphModule, node: fx.Node, info: LayerInfo, new: nn.Module) -> None:
    if info.fn is None:
        if "input" in node.kwargs and not node.args:  # linear(input=x): the twins take their spikes first
            kwargs = dict(node.kwargs)
            node.args, node.kwargs = (kwargs.pop("input"),), kwargs
        *path, last = node.target.split(".")
        parent = gm
        for p in path:
            parent = getattr(parent, p)
        setattr(parent, last, new)
        return
    name = f"spiking_{node.name}"
    gm.add_module(name, new)
    args, kwargs = node.args, dict(node.kwargs)
    if info.fn == "gin":
        args = args[:2]
    elif info.fn == "cat":
        args, kwargs = (args[0],), {}
    with gm.graph.inserting_before(node):
        m = gm.graph.call_module(name, tuple(args), kwargs)
    node.replace_all_uses_with(m)
    gm.graph.erase_node(node)
    if info.post is not None:  # the Linear fused into GIN's sum or an add/mean pool
        post = _node(gm.graph, info.post)
        post.replace_all_uses_with(m)
        gm.graph.erase_node(post)


def _node(graph: fx.Graph, name: str) -> fx.Node:
    return next(n for n in graph.nodes if n.name == name)
