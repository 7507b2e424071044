r"""reconstruct: layer-wise least-squares correction of a prepared graph model's weights (post-training calibration;
docs/method.md, section 14).

A one-spike neuron transmits its value rounded to the nearest power of :math:`Q` (within :math:`\pm(Q-1)/(Q+1)`
relative), so every layer of the SNN sees inputs a little off the ANN's, and the errors add up along the layers.
Where the ANN's decision is close (a near-tie between two classes), they flip it. Post-training quantisation and
SNN calibration (Nagel et al. 2019's bias correction; Li et al. 2021's layer-wise SNN calibration) correct for this
without retraining: each layer's weights are refitted, in order, so that the layer **fed the SNN's own inputs**
reproduces the ANN's pre-activation **fed the ANN's inputs**. For a linear map that is a ridge regression, solved
in closed form from normal equations accumulated over the calibration data:

.. math::
    [\mathbf{W}'\ \mathbf{b}'] = \arg\min_{\mathbf{W},\mathbf{b}}
    \sum_n \|\mathbf{W}\hat{\mathbf{x}}_n + \mathbf{b} - (\mathbf{W}_0\mathbf{x}_n + \mathbf{b}_0)\|^2
    + \alpha \|[\mathbf{W}\ \mathbf{b}] - [\mathbf{W}_0\ \mathbf{b}_0]\|^2,
    \qquad \alpha = \mathrm{ridge}\cdot\mathrm{tr}(\hat{\mathbf{X}}^\top\hat{\mathbf{X}})/d,

with :math:`\hat{\mathbf{x}}_n` the map's input in the functional SNN (the prepared model with every neuron site
rounded by the one-spike code, Eq. 4, and the input features by the input encoder), :math:`\mathbf{x}_n` its input in
the ANN and :math:`d` its input channels (the bias column left out of the trace). The pull towards the ANN's
weights (:math:`\alpha`) keeps rarely excited directions where they were.

With ``weighting="relative"`` (the default) row :math:`n` of the sum counts with the weight
:math:`\omega_n = 1/(e_n + \bar e)`, :math:`e_n` the mean square of its target row and :math:`\bar e` the mean of
:math:`e_n` over all the calibration rows of the map (and :math:`\hat{\mathbf{X}}^\top\hat{\mathbf{X}}` in
:math:`\alpha` is weighted alike). A sum aggregation or an add pool makes a row's scale grow with its node's degree
or its graph's size, and an unweighted fit then serves the largest graphs while the small ones, whose argmax is
just as scale-free, keep the residual. With :math:`\omega_n` a row above the mean energy counts by its relative
error, a row below it by its error at the mean energy (so near-zero rows do not take over).
``weighting="uniform"`` is the plain least squares. The lambdas are the observed ones
and stay as they are. The SNN is then built from the refitted copy: ``convert(prepared, code)``. The user's
model is never touched (``prepared`` is a copy).

Refitted are ``torch.nn.Linear`` and PyG ``Linear`` maps with a dense input of at most ``max_features`` columns
(the Linear of GIN's MLP, GCN's and SAGE's ``lin``, Cheb/TAG's ``lins``, the heads after a pool); parameters used
directly by a layer (GCN2Conv's ``weight1``), sparse inputs (``X = I``), weights tied across modules and computed
weights (weight norm) are left as they are, and named in one warning.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch_geometric.nn.dense.linear import Linear as PygLinear

from ..coding import PhaseCode, quantize
from .build import gcn_scale, input_encoder
from .prepare import Observer, PreparedGraphModule, call_args

__all__ = ["reconstruct"]


def reconstruct(prepared: PreparedGraphModule, code: PhaseCode, data: Any, ridge: float = 1e-4,
                channel_wise: bool = True, input_coding: str = "binary",
                max_features: int = 4096, weighting: str = "relative") -> PreparedGraphModule:
    """Refit ``prepared``'s linear maps, layer by layer, so that its functional SNN at ``code`` matches the ANN's
    pre-activations on ``data`` (see the module docstring). Call after calibration, before ``convert``:

        prepared = spikegcn.prepare(model, data); spikegcn.reconstruct(prepared, code, data)
        snn = spikegcn.convert(prepared, code)

    Args:
        prepared: a calibrated :class:`PreparedGraphModule` (changed in place and returned).
        code: the code the SNN will be built with (its ``T`` and ``Q`` set the rounding).
        data: calibration data it can read more than once: a ``Data``/``Batch``, a tuple or dict of forward
            arguments, or a list / ``DataLoader`` of those (two passes per refitted map).
        ridge: the pull towards the ANN's weights, relative to the mean input energy (``>= 0``).
        channel_wise, input_coding: as given to ``convert`` (they set the lambdas and the input rounding).
        max_features: maps with wider inputs are left as they are (their normal equations take ``d^2`` floats).
        weighting: ``"relative"`` (rows weighted by ``1 / (e_n + mean e)``, see the module docstring) or
            ``"uniform"`` (plain least squares).
    """
    if not isinstance(prepared, PreparedGraphModule):
        raise TypeError(f"reconstruct() takes the model returned by spikegcn.prepare(), got {type(prepared).__name__}")
    if not isinstance(code, PhaseCode):
        raise TypeError(f"code must be a PhaseCode, got {type(code).__name__}")
    check_ridge(ridge)
    if not (isinstance(max_features, int) and max_features >= 1):
        raise ValueError(f"max_features must be a positive int, got {max_features!r}")
    check_variant(getattr(prepared, "variant", "signed"))
    if weighting not in ("relative", "uniform"):
        raise ValueError(f"weighting must be 'relative' or 'uniform', got {weighting!r}")
    items = _reusable(data)
    rounders = _rounders(prepared, code, channel_wise, input_coding)
    params = dict(prepared.named_parameters())
    # the ANN's weights, kept on the first call: a second call (another ridge) refits from them again
    ann: dict[str, Tensor] = prepared.__dict__.setdefault(
        "_ann_parameters", {k: p.detach().clone() for k, p in params.items()})
    by_id = {id(p): ann[k] for k, p in params.items()}
    tied = _tied(prepared)
    skipped: list[str] = []
    try:
        with torch.no_grad():
            _restore(params, ann)
            order = _linear_order(prepared, items, rounders)
            energy = _mean_energy(prepared, items, ann, [m for _, m in order]) if weighting == "relative" else {}
            for name, lin in order:
                if not _refit(lin, items, rounders, ann, by_id, ridge, max_features, tied, prepared,
                              energy.get(lin)):
                    skipped.append(name)
    except BaseException:
        with torch.no_grad():
            _restore(params, ann)  # never leave a half-refitted model behind
        raise
    finally:
        _set_observers(prepared, None)
    prepared.refit_setting = (code, channel_wise, input_coding)
    if skipped:
        warnings.warn(f"reconstruct() left {len(skipped)} map(s) as trained: {', '.join(skipped)} (sparse or wider "
                      f"than max_features={max_features} input, a weight tied to another map, or a weight that is not "
                      f"a parameter)", stacklevel=2)
    return prepared


def check_ridge(ridge: Any) -> float:
    """A ridge is a finite real >= 0 (a bool is not one: ``convert`` takes ``True`` for the default)."""
    if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real) or not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    return float(ridge)


def check_variant(variant: str) -> None:
    if variant == "agg_first":
        raise ValueError("reconstruct does not support variant='agg_first' (its aggregation neurons are observed "
                         "beside the ANN's data flow, not on it); use variant='signed' or 'relu_mp'")


def _restore(params: dict[str, nn.Parameter], ann: dict[str, Tensor]) -> None:
    for k, p in params.items():
        p.copy_(ann[k])


def _tied(prepared: nn.Module) -> set[int]:
    """Ids of parameters that more than one Linear module holds (tied weights: refitting one would refit both)."""
    seen: dict[int, int] = {}
    for m in prepared.modules():
        if isinstance(m, (nn.Linear, PygLinear)):
            for p in m.parameters(recurse=False):
                seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, c in seen.items() if c > 1}


def _reusable(data: Any) -> Iterable:
    from .prepare import _is_single

    if _is_single(data):
        return [data]
    if isinstance(data, Iterator):
        raise TypeError("reconstruct reads the calibration data several times: pass a list or a DataLoader, "
                        "not a one-shot iterator or generator")
    if not isinstance(data, Iterable):
        raise TypeError(f"calibration data must be a Data/Batch, tuple, dict or an iterable of them, got "
                        f"{type(data).__name__}")
    return data  # a list or a DataLoader, read afresh on every pass


def _rounders(prepared: PreparedGraphModule, code: PhaseCode, channel_wise: bool,
              input_coding: str) -> dict[Observer, Callable[[Tensor], Tensor]]:
    """What the SNN makes of the value at each observer: the neurons' rounding, the input encoder's, or nothing."""
    if input_coding not in ("binary", "single"):
        raise ValueError(f"input_coding must be 'binary' or 'single', got {input_coding!r}")
    out: dict[Observer, Callable[[Tensor], Tensor]] = {}
    for info in prepared.plan.layers.values():
        if info.kind in ("relu", "signed"):
            obs = prepared.get_submodule(f"observer_{info.site}")
            out[obs] = _neuron(code, obs.scale(signed=info.kind == "signed", channel_wise=channel_wise),
                               signed=info.kind == "signed")
    for target, _ in prepared.named_modules():
        key = target.replace(".", "_")
        if hasattr(prepared, f"observer_{key}_mp"):  # GCNConv's message-passing neurons
            variant = getattr(prepared, "variant", "signed")
            out[prepared.get_submodule(f"observer_{key}_mp")] = _neuron(
                code, gcn_scale(prepared, target, variant, channel_wise), signed=variant == "signed")
    for src in prepared.plan.inputs:
        obs = prepared.get_submodule(f"observer_{src}")
        if obs.seen:  # the input encoder the SNN gets, built the same way
            out[obs] = _encoded(input_encoder(obs, code, input_coding))
    return out


def _neuron(code: PhaseCode, scale: Tensor, signed: bool) -> Callable[[Tensor], Tensor]:
    def f(y: Tensor) -> Tensor:
        s = scale.to(y)
        return quantize(y / s, code, signed=signed) * s
    return f


def _encoded(enc: nn.Module) -> Callable[[Tensor], Tensor]:
    def f(x: Tensor) -> Tensor:
        return enc(x).values(x.dtype)
    return f


def _set_observers(prepared: PreparedGraphModule, rounders: dict | None) -> None:
    """``None``: observers observe again; a dict: they stop observing and apply their rounder (or pass through)."""
    for obs in prepared.observers().values():
        obs.transform = None if rounders is None else rounders.get(obs, _identity)


def _identity(y: Tensor) -> Tensor:
    return y


def _run(prepared: PreparedGraphModule, item: Any, params: dict | None = None) -> None:
    args, kwargs = call_args(prepared, item)
    if params is None:
        prepared(*args, **kwargs)
    else:
        functional_call(prepared, params, args, kwargs)


def _linear_order(prepared: PreparedGraphModule, items: Iterable, rounders: dict) -> list[tuple[str, nn.Module]]:
    """The model's Linear maps in the order the forward first calls them (so each is refitted after its inputs)."""
    order: list[tuple[str, nn.Module]] = []

    def hook(m, a, kw, name):
        if not any(m is o for _, o in order):
            order.append((name, m))
    hooks = [m.register_forward_pre_hook(lambda m, a, kw, n=n: hook(m, a, kw, n), with_kwargs=True)
             for n, m in prepared.named_modules() if isinstance(m, (nn.Linear, PygLinear))]
    _set_observers(prepared, rounders)
    try:
        first = next(iter(items), None)
        if first is None:
            raise ValueError("calibration data is empty")
        _run(prepared, first)
    finally:
        for h in hooks:
            h.remove()
    return order


def _mean_energy(prepared: PreparedGraphModule, items: Iterable, ann: dict[str, Tensor],
                 lins: list[nn.Module]) -> dict[nn.Module, float]:
    """Each map's mean square target (its ANN output) over all calibration rows: one ANN pass for all maps."""
    sums: dict[nn.Module, list[float]] = {m: [0.0, 0.0] for m in lins}

    def hook(m, args, out):
        if isinstance(out, Tensor) and out.numel():
            y = out.detach().double()
            sums[m][0] += float((y * y).sum()) / out.shape[-1]
            sums[m][1] += out.numel() / out.shape[-1]
    handles = [m.register_forward_hook(hook) for m in lins]
    try:
        _set_observers(prepared, {})
        for item in items:
            _run(prepared, item, ann)
    finally:
        for h in handles:
            h.remove()
    energy = {m: s / n for m, (s, n) in sums.items() if n > 0}
    return {m: e for m, e in energy.items() if 0.0 < e < math.inf}  # zero (or inf) targets: unweighted


def _refit(lin: nn.Module, items: Iterable, rounders: dict, ann: dict[str, Tensor], by_id: dict[int, Tensor],
           ridge: float, max_features: int, tied: set[int], prepared: PreparedGraphModule,
           energy: float | None = None) -> bool:
    """Accumulate the normal equations of one map over the data (ANN inputs -> targets, SNN inputs), then solve;
    with ``energy`` (the mean square target) the rows are weighted by ``1 / (e_n + energy)``.
    ``False``: the map is left as it is (see :func:`reconstruct`)."""
    w, b = lin.weight, lin.bias
    own = [id(t) for t in (w, b) if t is not None]
    if any(i not in by_id or i in tied for i in own):
        return False  # a computed weight (weight norm) or one tied to another map
    w0, b0 = by_id[id(w)], (by_id[id(b)] if b is not None else None)
    if w0.dim() != 2 or w0.shape[1] > max_features:
        return False
    grab: list[Tensor] = []

    def hook(m, args, kwargs):
        x = args[0] if args else kwargs.get("input", kwargs.get("x"))
        dense = isinstance(x, Tensor) and x.layout == torch.strided and x.is_floating_point()
        grab.append(x.detach().reshape(-1, x.shape[-1]) if dense else w0.new_empty(0))  # sparse X = I: not refitted
    handle = lin.register_forward_pre_hook(hook, with_kwargs=True)
    d = w0.shape[1] + (b0 is not None)
    xtx = w0.new_zeros(d, d, dtype=torch.float64)
    xty = w0.new_zeros(d, w0.shape[0], dtype=torch.float64)
    rows = 0
    try:
        for item in items:
            grab.clear()
            _set_observers(prepared, {})  # the ANN: its weights, observers pass values through
            _run(prepared, item, ann)
            clean = grab[:]
            grab.clear()
            _set_observers(prepared, rounders)  # the functional SNN with the maps refitted so far
            _run(prepared, item)
            if len(clean) != len(grab) or any(c.numel() == 0 or c.shape != s.shape for c, s in zip(clean, grab)):
                return False
            for xa, xs in zip(clean, grab):
                y = xa.double() @ w0.double().t() + (b0.double() if b0 is not None else 0.0)
                xs1 = xs.double() if b0 is None else torch.cat([xs.double(), xs.new_ones(xs.shape[0], 1).double()], 1)
                xw = xs1 if energy is None else xs1 / ((y * y).mean(1, keepdim=True) + energy)
                xtx += xw.t() @ xs1
                xty += xw.t() @ y
                rows += xs.shape[0]
    finally:
        handle.remove()
    if rows == 0:
        return False
    wb0 = w0.double() if b0 is None else torch.cat([w0.double(), b0.double()[:, None]], 1)
    # alpha from the inputs' energy (the bias column's constant 1 left out of the mean)
    alpha = ridge * float(xtx.diagonal()[: w0.shape[1]].sum()) / w0.shape[1]
    eye = torch.eye(d, dtype=xtx.dtype, device=xtx.device)
    lhs, rhs = xtx + alpha * eye, xty + alpha * wb0.t()
    # positive definite with a ridge; without one, a dead input channel makes it singular: least norm
    sol = (torch.linalg.solve(lhs, rhs) if alpha > 0 else torch.linalg.pinv(lhs) @ rhs).t()
    w.copy_(sol[:, : w0.shape[1]].to(w))
    if b is not None:
        b.copy_(sol[:, -1].to(b))
    return True
