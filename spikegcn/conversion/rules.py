"""Per-type conversion rules: which PyG/torch layers convert, which arguments carry spikes, how to build the twin.

A rule says (1) why a configuration of the layer cannot be one-spike (``check``, run before tracing), (2) which
``forward`` arguments carry node features (``stream_args``: these receive spikes in the converted model; the
others, ``edge_index``, ``edge_weight``, ``batch``, pass through unchanged) and (3) how to build the spiking
twin from the trained module and its calibrated lambda (``build``). A ``BatchNorm1d`` right after a layer with
weights is folded into them (:func:`fold_affine`); its lambda is observed on the BatchNorm's output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch_geometric.nn import (
    APPNP,
    ChebConv,
    GCN2Conv,
    GCNConv,
    GraphConv,
    JumpingKnowledge,
    SAGEConv,
    SGConv,
    SimpleConv,
    TAGConv,
)
from torch_geometric.nn.dense.linear import Linear as PygLinear

from ..coding import PhaseCode
from ..nn.appnp import SpikingAPPNP
from ..nn.base import set_scale
from ..nn.cheb_conv import SpikingChebConv
from ..nn.gcn2_conv import SpikingGCN2Conv
from ..nn.gcn_conv import SpikingGCNConv
from ..nn.gin_conv import SpikingGINAggregation, SpikingGINConv
from ..nn.global_pool import SpikingGlobalPool
from ..nn.graph_conv import SpikingGraphConv
from ..nn.join import SpikingConcat, SpikingJoin
from ..nn.linear import SpikingLinear
from ..nn.sage_conv import SpikingSAGEConv
from ..nn.sg_conv import SpikingSGConv
from ..nn.simple_conv import SpikingSimpleConv
from ..nn.tag_conv import SpikingTAGConv

__all__ = ["Rule", "BuildContext", "RULES", "rule_for", "fold_affine", "FUNCTION_STREAMS"]


@dataclass
class BuildContext:
    """What a rule needs to build a spiking twin: the code, its neuron kind and calibrated lambda(s)."""

    code: PhaseCode
    mode: str
    backend: str
    kind: str  # "relu" (unsigned), "signed" or "output"
    scale: Tensor  # lambda per output channel (unused for output layers but sized right)
    variant: str = "signed"
    extra: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.scale.numel()) if self.scale.dim() else 1

    def layer_kwargs(self) -> dict:
        return dict(code=self.code, signed=self.kind == "signed", mode=self.mode,
                    output="potential" if self.kind == "output" else "spikes", backend=self.backend)


@dataclass
class Rule:
    build: Callable[[Any, BuildContext], nn.Module]
    stream_args: tuple[str, ...] = ("x",)
    check: Callable[[nn.Module], str | None] = lambda m: None


def _scaled(layer: nn.Module, ctx: BuildContext) -> nn.Module:
    layer.set_scale(ctx.scale)
    return layer


def _build_gcn(conv: GCNConv, ctx: BuildContext) -> nn.Module:
    new = SpikingGCNConv.from_gcnconv(conv, code=ctx.code, mp_scale=ctx.extra["mp_scale"], scale=ctx.scale,
                                      variant=ctx.variant, mode=ctx.mode,
                                      output="potential" if ctx.kind == "output" else "spikes", backend=ctx.backend)
    if ctx.kind == "signed":
        new.aggr.signed = True
    return new


def _build_linear(lin: nn.Module, ctx: BuildContext) -> nn.Module:
    kw = ctx.layer_kwargs()
    return SpikingLinear.from_linear(lin, scale=ctx.scale, **kw)


def _aggr_check(m: nn.Module) -> str | None:
    if not isinstance(m.aggr, str) or m.aggr not in ("add", "sum", "mean", "max"):
        return f"aggregation {m.aggr!r} is not a linear map or a max (mean, sum and max are)"
    return None


def _sage_check(m: SAGEConv) -> str | None:
    if m.project:
        return "project=True puts a ReLU-projected copy of x inside the layer (build it as Linear + ReLU instead)"
    if m.normalize:
        return "normalize=True divides each output by its L2 norm, not a fixed linear map"
    sizes = m.in_channels if isinstance(m.in_channels, tuple) else (m.in_channels,)
    if len({c for c in sizes if c != -1}) > 1:  # (-1, -1) or (16, 16): one node set, sizes given twice
        return "bipartite (tuple) inputs are not supported"
    return _aggr_check(m)


def _simple_check(m: SimpleConv) -> str | None:
    if m.combine_root == "cat":
        return "combine_root='cat' puts two maps side by side (use 'sum' or 'self_loop')"
    return _aggr_check(m)


def _build_jk(jk: JumpingKnowledge, ctx: BuildContext) -> nn.Module:
    if jk.mode == "cat":
        return SpikingConcat()
    return _scaled(SpikingJoin(ctx.channels, reduce="max", **ctx.layer_kwargs()), ctx)


def resolve_lazy_channels(m: nn.Module, name: str) -> None:
    """A layer built with ``in_channels=-1`` (PyG's lazy initialisation) keeps -1 after its Linear maps learned
    their sizes, and one given ``(n, n)`` keeps the tuple: set one size from the maps (the prepared copy only), so
    that its spiking twin gets it."""
    c = getattr(m, "in_channels", None)
    if not (c == -1 or isinstance(c, tuple)):
        return
    lins = [x for x in m.modules() if isinstance(x, (nn.Linear, PygLinear)) and x is not m]
    if not lins or any(isinstance(x.weight, nn.parameter.UninitializedParameter) for x in lins):
        from .capture import UnsupportedModuleError

        raise UnsupportedModuleError(f"cannot convert module {name} ({type(m).__name__}): its in_channels=-1 weights "
                                     f"are not initialised yet; run the model once on data before converting it")
    sizes = {int(x.weight.shape[1]) for x in lins}
    if len(sizes) != 1:
        from .capture import UnsupportedModuleError

        raise UnsupportedModuleError(f"cannot convert module {name} ({type(m).__name__}): bipartite (tuple) inputs "
                                     f"of sizes {sorted(sizes)} are not supported")
    m.in_channels = sizes.pop()


def _from_module(cls, with_channels: bool = False):
    def build(m: nn.Module, ctx: BuildContext) -> nn.Module:
        kw = ctx.layer_kwargs()
        layer = cls.from_module(m, ctx.channels, **kw) if with_channels else cls.from_module(m, **kw)
        return _scaled(layer, ctx)
    return build


RULES: dict[type, Rule] = {
    GCNConv: Rule(_build_gcn),
    nn.Linear: Rule(_build_linear, stream_args=("input",)),
    PygLinear: Rule(_build_linear),
    SAGEConv: Rule(_from_module(SpikingSAGEConv), check=_sage_check),
    GraphConv: Rule(_from_module(SpikingGraphConv), check=_aggr_check),
    SGConv: Rule(_from_module(SpikingSGConv)),
    ChebConv: Rule(_from_module(SpikingChebConv)),
    TAGConv: Rule(_from_module(SpikingTAGConv)),
    APPNP: Rule(_from_module(SpikingAPPNP, with_channels=True)),
    GCN2Conv: Rule(_from_module(SpikingGCN2Conv), stream_args=("x", "x_0")),
    SimpleConv: Rule(_from_module(SpikingSimpleConv, with_channels=True), check=_simple_check),
    JumpingKnowledge: Rule(_build_jk, stream_args=("xs",)),
}


def rule_for(m: Any) -> Rule | None:
    for t, rule in RULES.items():
        if isinstance(m, t):
            return rule
    return None


def build_function_layer(kind: str, ctx: BuildContext) -> nn.Module:
    """Twins of the function-call layers: ``"join"`` (a + b), ``"cat"``, ``"gin"`` and ``"pool_*"``."""
    kw = ctx.layer_kwargs()
    if kind == "cat":
        return SpikingConcat()
    if kind == "join":
        return _scaled(SpikingJoin(ctx.channels, **kw), ctx)
    if kind == "gin":
        eps = float(torch.as_tensor(ctx.extra["eps"]).detach())
        if "linear" in ctx.extra:
            return _scaled(SpikingGINConv.from_linear(ctx.extra["linear"], eps, **kw), ctx)
        return _scaled(SpikingGINAggregation(ctx.channels, eps=eps, **kw), ctx)
    reduce = kind.split("_", 1)[1]
    if "linear" in ctx.extra:
        return _scaled(SpikingGlobalPool.from_linear(ctx.extra["linear"], reduce, **kw), ctx)
    return _scaled(SpikingGlobalPool(ctx.channels, reduce=reduce, **kw), ctx)


# positions of the spike-carrying arguments of the function-call layers
FUNCTION_STREAMS = {"join": (0, 1), "cat": (0,), "gin": (0,), "pool_add": (0,), "pool_mean": (0,), "pool_max": (0,)}


def bn_affine(bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """``BN(y) = a * y + c`` in eval mode."""
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics normalises by the batch itself")
    a = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        a = a * bn.weight
    c = -bn.running_mean * a
    if bn.bias is not None:
        c = c + bn.bias
    return a.detach(), c.detach()


@torch.no_grad()
def fold_affine(layer: nn.Module, a: Tensor, c: Tensor) -> None:
    """Fold ``a * y + c`` (a BatchNorm after the layer) into the layer's output weights and bias."""
    if isinstance(layer, SpikingGCNConv):
        out_lin = layer.lin
        if layer.variant != "agg_first":
            # A-hat (X W^T) a = A-hat (X (a W)^T): the message-passing neurons carry a times their old values
            out_lin.weight.mul_(a[:, None])
            set_scale(out_lin.scale, out_lin.scale * a.abs())
            _fold_bias(layer.aggr, a, c)
            return
        targets, holder = [out_lin.weight], out_lin
    elif isinstance(layer, SpikingLinear):
        targets, holder = [layer.weight], layer
    elif isinstance(layer, (SpikingSAGEConv, SpikingSGConv, SpikingChebConv, SpikingTAGConv, SpikingGINConv)) or (
            isinstance(layer, SpikingGlobalPool) and layer.weight is not None):
        targets = [p for n, p in layer.named_parameters() if n.startswith("weight")]
        holder = layer
    else:
        raise ValueError(f"a BatchNorm after {type(layer).__name__} cannot be folded (no output weights)")
    for w in targets:
        w.mul_(a[:, None])
    _fold_bias(holder, a, c)


def _fold_bias(holder: nn.Module, a: Tensor, c: Tensor) -> None:
    if holder.bias is None:
        holder.bias = nn.Parameter(c.clone().to(holder.scale.dtype))
    else:
        holder.bias.copy_(holder.bias * a + c)


__all__ += ["build_function_layer", "bn_affine"]
