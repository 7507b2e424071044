"""prepare: trace a copy of the model, check it, and insert observers (torch.ao's prepare step for graphs).

``prepared = prepare(model, example)`` deep-copies ``model`` (the user's model is never touched, its train/eval
flag included), traces the copy (:mod:`.capture`), places the neurons (:mod:`.graph`) and inserts an
:class:`Observer` after every neuron site and on every input feature stream. Run ``prepared`` on any calibration
data (a loop, a ``DataLoader``), or hand it an iterable with :func:`calibrate`; then
``spikegcn.convert(prepared, code)`` builds the SNN from the observed lambdas.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch_geometric.nn import ChebConv, GCNConv, GraphConv, SAGEConv, SGConv, SimpleConv, TAGConv
from torch_geometric.nn.dense.linear import Linear as PygLinear

from ..nn.aggregation import SpikingAggregation
from ..nn.base import _is_identity
from ..validate import check_calibration
from .capture import UnsupportedModuleError, refuse_sampling_call, refuse_unsupported, trace
from .graph import Plan, analyse
from .observers import activation_scale

__all__ = ["Observer", "PreparedGraphModule", "prepare", "calibrate", "call_args"]


class Observer(nn.Module):
    """Running per-channel maxima of the positive and negative parts of a value (channels last), or all rows
    when a percentile is wanted. Returns its input unchanged; with a ``transform`` set (by :func:`reconstruct`)
    it observes nothing and returns ``transform(value)``."""

    def __init__(self, name: str, percentile: float | None = None):
        super().__init__()
        self.name, self.percentile = name, percentile
        self.pos: Tensor | None = None
        self.neg: Tensor | None = None
        self.rows: list[Tensor] = []
        self.transform: Callable[[Tensor], Tensor] | None = None

    def forward(self, y):
        if isinstance(y, Tensor) and y.is_floating_point() and y.layout == torch.strided:
            if self.transform is not None:
                return self.transform(y)
            self.update(y)
        return y

    @torch.no_grad()
    def update(self, y: Tensor) -> None:
        check_calibration(y, self.name)
        y2 = y.detach().reshape(-1, y.shape[-1]) if y.dim() > 1 else y.detach().reshape(-1, 1)
        pos, neg = y2.clamp(min=0).amax(0), (-y2).clamp(min=0).amax(0)
        self.pos = pos if self.pos is None else torch.maximum(self.pos, pos)
        self.neg = neg if self.neg is None else torch.maximum(self.neg, neg)
        if self.percentile is not None:
            self.rows.append(y2)

    @torch.no_grad()
    def update_columns(self, col: Tensor, values: Tensor, num_columns: int) -> None:
        """Per-column maxima of a sparse value (the non-zeros of A-hat I)."""
        pos = values.new_zeros(num_columns).scatter_reduce(0, col, values.clamp(min=0), "amax")
        neg = values.new_zeros(num_columns).scatter_reduce(0, col, (-values).clamp(min=0), "amax")
        self.pos = pos if self.pos is None else torch.maximum(self.pos, pos)
        self.neg = neg if self.neg is None else torch.maximum(self.neg, neg)

    @property
    def seen(self) -> bool:
        return self.pos is not None

    @property
    def signed_seen(self) -> bool:
        return self.seen and bool((self.neg > 0).any())

    def scale(self, signed: bool, channel_wise: bool = True) -> Tensor:
        """Lambda: per channel (or one) max or percentile of ``max(y, 0)`` (ReLU) or ``|y|`` (signed)."""
        if not self.seen:
            raise RuntimeError(f"observer {self.name} saw no data: run the prepared model on calibration data "
                               f"before converting it")
        if self.percentile is not None and self.rows:
            return activation_scale(torch.cat(self.rows), signed=signed, channel_wise=channel_wise,
                                    percentile=self.percentile)
        m = torch.maximum(self.pos, self.neg) if signed else self.pos
        return activation_scale(m[None], signed=False, channel_wise=channel_wise)

    def extra_repr(self) -> str:
        return f"{self.name!r}, percentile={self.percentile}"


class PreparedGraphModule(fx.GraphModule):
    """A traced copy of the model with observers; always evaluates in eval mode (BatchNorm folds, no dropout)."""

    plan: Plan
    featureless: dict[str, tuple[int, bool]]  # placeholder -> (N, the ANN takes a sparse X = I)

    def train(self, mode: bool = True) -> "PreparedGraphModule":
        return super().train(False)

    def __call__(self, *args, **kwargs):
        refuse_sampling_call(self, args, kwargs)
        if getattr(self, "featureless", None):  # X = I for the ANN's calibration pass (see _featureless)
            bound = inspect.signature(self.forward).bind(*args, **kwargs)
            for name, spec in self.featureless.items():
                if name in bound.arguments:
                    bound.arguments[name] = _eye_like(bound.arguments[name], spec, self)
            args, kwargs = bound.args, bound.kwargs
        return super().__call__(*args, **kwargs)

    def observers(self) -> dict[str, Observer]:
        return {n: m for n, m in self.named_modules() if isinstance(m, Observer)}


def call_args(model: nn.Module, data: Any) -> tuple[tuple, dict]:
    """Map a PyG ``Data``/``Batch`` (or a tuple/dict of arguments) onto the model's forward parameters."""
    if isinstance(data, tuple):
        return data, {}
    if isinstance(data, dict):
        return (), data
    if isinstance(data, Tensor):
        return (data,), {}
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) == 1 and not hasattr(data, params[0].name):
        return (data,), {}
    kwargs = {}
    for p in params:
        if hasattr(data, p.name) and getattr(data, p.name) is not None:
            kwargs[p.name] = getattr(data, p.name)
        elif p.default is p.empty:
            if p.name in ("x", "batch"):  # featureless graph (X = I); one graph, no batch vector
                kwargs[p.name] = None
            else:
                raise ValueError(f"calibration data has no attribute {p.name!r} needed by "
                                 f"{type(model).__name__}.forward")
    return (), kwargs


def prepare(model: nn.Module, example: Any, variant: str = "signed",
            percentile: float | None = None) -> PreparedGraphModule:
    """Trace a copy of ``model`` and insert observers (see the module docstring).

    Args:
        model: a trained PyG/torch model (never modified).
        example: one calibration input (``Data``/``Batch``, a tuple or dict of forward arguments); it is run
            through the prepared model, so it is calibrated on too.
        variant: GCNConv sign handling (``"signed"``, ``"relu_mp"``, ``"agg_first"``).
        percentile: keep every observed row so that lambda can be this percentile instead of the max.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if percentile is not None and not (0.0 < percentile <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise TypeError("prepare() is the graph converter's first step; convert a CNN in one call with "
                        "spikegcn.convert(model, images, code)")
    refuse_unsupported(model)
    copy_ = copy.deepcopy(model).eval()
    args, kwargs = call_args(copy_, example)
    bound = inspect.signature(copy_.forward).bind(*args, **kwargs).arguments
    gm = trace(copy_, dict(bound))
    featureless = _featureless(gm, bound)
    ann_bound = {k: _eye_like(v, featureless[k], gm) if k in featureless else v for k, v in bound.items()}
    plan = analyse(gm, example_inputs(gm, ann_bound), featureless=tuple(featureless))
    prepared = PreparedGraphModule(gm, gm.graph, class_name="Prepared" + type(model).__name__)
    prepared.plan = plan
    prepared.featureless = featureless
    _insert_observers(prepared, plan, variant, percentile)
    prepared.variant = variant
    prepared(*args, **kwargs)
    return prepared


def _featureless(gm: fx.GraphModule, bound: dict) -> dict[str, tuple[int, bool]]:
    """Featureless inputs (``x=None`` or a sparse identity: X = I) -> (N, whether the ANN layers reading them take
    the sparse identity as it is). PyG's other layers index or scatter x, so their calibration pass gets a dense
    ``eye(N)`` (the same X); the spiking twins get :class:`~spikegcn.spikes.IdentitySpikes` either way."""
    out: dict[str, tuple[int, bool]] = {}
    modules = dict(gm.named_modules())
    for n in gm.graph.nodes:
        if n.op != "placeholder" or n.target not in bound:
            continue
        v = bound[n.target]
        if not (v is None and n.target == "x") and not (isinstance(v, Tensor) and v.layout != torch.strided
                                                        and _is_identity(v)):
            continue
        readers, direct = _readers(n, modules)
        bad = [(u, m) for u, m in readers.items() if not isinstance(m, _FEATURELESS_READERS)]
        if bad:
            raise UnsupportedModuleError(
                f"cannot convert module {bad[0][0]} ({type(bad[0][1]).__name__}) on featureless input "
                f"{n.target} (X = I): it is supported where the first layer maps x by its weights or an aggregation "
                f"({', '.join(t.__name__ for t in _FEATURELESS_READERS)}); pass explicit features, "
                f"e.g. {n.target}=torch.eye(N)")
        readers = list(readers.values())
        sizes = {int(v.shape[0])} if v is not None else {_in_size(m) for m in readers}
        if not readers or len(sizes) != 1 or None in sizes or -1 in sizes:
            raise UnsupportedModuleError(
                f"featureless input {n.target}=None (X = I) needs layers with a known number of input channels "
                f"(= nodes) reading it; pass explicit features instead, e.g. {n.target}=torch.eye(N)")
        out[n.target] = (sizes.pop(), direct and all(isinstance(m, (GCNConv, nn.Linear)) for m in readers))
    return out


# layers whose first operation on x is linear (or a max gate): X = I is well-defined as one spike per node
_FEATURELESS_READERS = (GCNConv, nn.Linear, PygLinear, SAGEConv, GraphConv, SGConv, ChebConv, TAGConv, SimpleConv)


def _readers(node: fx.Node, modules: dict) -> tuple[dict[str, nn.Module], bool]:
    """The modules that first read ``node`` (through dropout/ReLU; GIN's sum: the Linear after it), and whether
    they read it directly (no function such as GIN's sum in between)."""
    out, todo, seen, direct = {}, list(node.users), set(), True
    while todo:
        u = todo.pop()
        if u in seen:
            continue
        seen.add(u)
        m = modules.get(u.target) if u.op == "call_module" else None
        if m is not None and not isinstance(m, (nn.ReLU, nn.Dropout, nn.Identity)):
            out[u.target] = m
        elif u.op in ("call_module", "call_function", "call_method"):
            direct = direct and (m is not None or u.target in (F.relu, F.dropout, torch.relu, "relu"))
            todo.extend(u.users)
    return out, direct


def _in_size(m: nn.Module) -> int | None:
    size = getattr(m, "in_channels", getattr(m, "in_features", None))
    return size if isinstance(size, int) else None


def _eye_like(x: Any, spec: tuple[int, bool], root: nn.Module) -> Any:
    """``X = I`` in the form the ANN's first layers take (sparse as given, or dense on the model's device/dtype)."""
    if x is not None and not (isinstance(x, Tensor) and x.layout != torch.strided and _is_identity(x)):
        return x  # real features passed to the prepared model: calibrate on them as they are
    n, sparse_ok = spec
    if x is not None and (sparse_ok or x.shape[0] != n):
        return x
    p = next((t for t in root.parameters() if t.is_floating_point()), None)
    eye = torch.eye(n) if p is None else torch.eye(n, dtype=p.dtype, device=p.device)
    return eye.to_sparse() if sparse_ok else eye


def example_inputs(gm: fx.GraphModule, bound: dict) -> list:
    """Placeholder values in order, for the interpreter that records which values are float features."""
    out = []
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            name = n.target[:-2] if n.target.endswith("_1") and n.target[:-2] in bound else n.target
            out.append(bound.get(name, n.args[0] if n.args else None))
    return out


def _observe_after(gm: fx.GraphModule, node: fx.Node, obs: Observer) -> None:
    name = f"observer_{node.name}"
    gm.add_module(name, obs)
    with gm.graph.inserting_after(node):
        o = gm.graph.call_module(name, (node,))
    node.replace_all_uses_with(o, delete_user_cb=lambda u: u is not o)


def _insert_observers(gm: PreparedGraphModule, plan: Plan, variant: str, percentile: float | None) -> None:
    nodes = {n.name: n for n in gm.graph.nodes}
    modules = dict(gm.named_modules())
    for name, info in plan.layers.items():
        _observe_after(gm, nodes[info.site], Observer(info.site, percentile))
        if info.fn is None and isinstance(modules[nodes[name].target], GCNConv):
            _observe_gcn(gm, nodes[name].target, modules[nodes[name].target], variant, percentile)
    for src in plan.inputs:
        _observe_after(gm, nodes[src], Observer(src, percentile))
    gm.graph.lint()
    gm.recompile()


def _observe_gcn(gm: nn.Module, target: str, conv: GCNConv, variant: str, percentile: float | None) -> None:
    key = target.replace(".", "_")
    if variant != "agg_first":
        obs = Observer(target + ".mp", percentile)
        gm.add_module(f"observer_{key}_mp", obs)
        conv.lin.register_forward_hook(lambda m, i, o: obs(o))
        return
    obs = Observer(target + ".agg", percentile)
    gm.add_module(f"observer_{key}_agg", obs)
    conv.register_forward_pre_hook(lambda m, a, kw: _observe_agg_first(m, a, kw, obs), with_kwargs=True)


@torch.no_grad()
def _observe_agg_first(conv: GCNConv, args: tuple, kwargs: dict, obs: Observer) -> None:
    """The aggregation neurons A-hat X that the 'agg_first' order puts before the linear map."""
    bound = dict(zip(["x", "edge_index", "edge_weight"], args), **kwargs)
    x = bound["x"]
    featureless = x is None or (x.layout != torch.strided and _is_identity(x))
    n = conv.in_channels if x is None else x.shape[0]
    agg = SpikingAggregation(conv.in_channels, improved=conv.improved, add_self_loops=conv.add_self_loops,
                             normalize=conv.normalize)
    adj = agg.graph_op(bound["edge_index"], bound.get("edge_weight"), n).adj
    if featureless:  # A-hat I = A-hat: the neurons are its non-zeros, channel = column
        if obs.percentile is not None:
            raise ValueError("percentile calibration is not supported for the aggregation-first layer of a "
                             "featureless (X = I) model; use the max (percentile=None)")
        obs.update_columns(adj.col_indices().long(), adj.values(), adj.shape[1])
        return
    if x.layout != torch.strided:
        x = x.to_dense()
    obs.update(torch.sparse.mm(adj, x.detach().float()))


def calibrate(prepared: PreparedGraphModule, data: Any) -> PreparedGraphModule:
    """Run ``prepared`` on ``data``: one ``Data``/``Batch``/tuple/dict, or an iterable of them."""
    items = [data] if _is_single(data) else data
    count = 0
    with torch.no_grad():
        for item in items:
            args, kwargs = call_args(prepared, item)
            prepared(*args, **kwargs)
            count += 1
    if count == 0:
        raise ValueError("calibration data is empty")
    return prepared


def _is_single(data: Any) -> bool:
    from torch_geometric.data import Data, HeteroData

    return isinstance(data, (Data, HeteroData, tuple, dict, Tensor)) or not isinstance(data, Iterable)


__all__ += ["UnsupportedModuleError"]
