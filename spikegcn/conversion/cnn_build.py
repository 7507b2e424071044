r"""Building a converted CNN: symbolic evaluation of the traced graph into a graph of spiking modules.

A conv/linear/pool output is a *pre-activation* (:class:`_Pre`): a sum of synaptic terms from spike sources plus a
bias, in ANN units. BatchNorm scales the terms and shifts the bias (folded into the weights, docs/method.md, A11);
``+`` merges terms (a spike source added directly is an identity term); a ReLU turns a pre-activation into a neuron
layer (:meth:`CNNBuilder.neuron`). See :mod:`spikegcn.conversion.fx` for the whole conversion.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch
from torch import Tensor, fx, nn

from ..nn.conv import SpikingConv2d, fold_batchnorm
from ..nn.encoder import PhaseEncoder
from ..nn.fc import SpikingFC, SpikingFlatten
from ..nn.leaves import ChannelSelect, leaf_rule
from ..nn.pool import SpikingAvgPool2d, SpikingMaxPool2d, avgpool_args
from ..nn.residual import SpikingResidual
from .capture import UnsupportedModuleError
from .cnn_capture import ADD_FUNCS, DROPOUT_FUNCS, FLATTEN_FUNCS, describe
from .graph import _is_relu

__all__ = ["CNNBuilder"]


# --------------------------------------------------------------------------------------------- symbolic values
@dataclass
class _Spk:
    """A spiking value: the new-graph node that produces it, lambda per channel (or feature), its shape."""
    node: fx.Node
    lam: Tensor  # float64 [C] (per channel of a map) or [F] (per feature)
    shape: tuple  # without batch
    signed: bool = False  # the signed input encoding
    depth: int = 0  # neuron layers on the longest path from the input


@dataclass
class _Term:
    """Synaptic term in ANN units: ``kind`` conv (weight + conv args), linear (weight, optional folded pool and
    flatten), avgpool (pool args, per-channel gain), diag (identity, per-channel gain), option_a (subsample +
    channel pad, per-output-channel gain), from the spiking value ``src``."""
    kind: str
    src: _Spk
    weight: Tensor | None = None
    args: dict = field(default_factory=dict)
    flat: bool = False  # an avgpool term that was flattened (for folding into the next Linear)
    name: str = ""


@dataclass
class _Pre:
    """A pre-activation: sum of terms plus bias (ANN units), ``obs`` = the node whose observed activation gives
    lambda if it is re-encoded without a ReLU (an average pool)."""
    terms: list
    bias: Tensor | None
    shape: tuple
    obs: str | None = None
    name: str = ""


class _Meta:
    """A shape value (``x.size(0)``, ``x.shape``): only used to flatten."""


class CNNBuilder:
    """Symbolic evaluation of the traced graph into a new graph of spiking modules."""

    def __init__(self, gm, modules, code, mode, shapes, lam_of, channel_wise, fold_avgpool, dtype, device):
        self.gm, self.modules, self.code, self.mode, self.dtype = gm, modules, code, mode, dtype
        self.f64 = dict(dtype=torch.float64, device=device)  # every tensor the builder makes lives with the model
        self.device = device
        self.shapes, self.lam_of = shapes, lam_of
        self.channel_wise, self.fold_avgpool = channel_wise, fold_avgpool
        self.graph = fx.Graph()
        self.root: dict[str, nn.Module] = {}
        self.env: dict[fx.Node, Any] = {}
        self._names: set[str] = set()

    # ---- helpers
    def add_module(self, name: str, mod: nn.Module, args: tuple) -> fx.Node:
        base, k = name, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        self.root[name] = mod
        return self.graph.call_module(name, args)

    def fail(self, n: fx.Node, why: str) -> NoReturn:
        raise UnsupportedModuleError(f"cannot convert {describe(n, self.modules)}: {why}")

    def arg(self, n: fx.Node, a):
        return self.env[a] if isinstance(a, fx.Node) else a

    def encode_input(self, input_coding: str, in_max: Tensor | None) -> None:
        """The input encoder (lambda = the images' max |x|) on the forward's single image input."""
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedModuleError(f"CNN conversion needs a forward with one image input, got "
                                         f"{[p.target for p in placeholders]}")
        x_node = placeholders[0]
        enc = PhaseEncoder(T=self.code.T, coding=input_coding, code=self.code).to(device=self.device, dtype=self.dtype)
        lam0 = float(in_max) if in_max is not None and in_max > 0 else 1.0
        enc.scale.fill_(lam0)
        enc.calibrated.fill_(True)
        new_x = self.graph.placeholder(x_node.target)
        enc_node = self.add_module("input_encoder", enc, (new_x,))
        c_in = self.shapes[x_node.name][0]
        self.env[x_node] = _Spk(enc_node, torch.full((c_in,), float(enc.scale), dtype=torch.float64,
                                                     device=self.device), self.shapes[x_node.name], signed=True,
                                depth=0)

    # ---- dispatch
    def visit(self, n: fx.Node) -> None:
        m = self.modules.get(n.target) if n.op == "call_module" else None
        if n.op == "output":
            return self.output(n)
        if n.op == "call_function" and n.target in (getattr, operator.getitem):
            v = self.arg(n, n.args[0])
            if isinstance(v, _Meta) or (n.target is getattr and n.args[1] == "shape"):
                self.env[n] = _Meta()
                return
            self.fail(n, "indexing a hidden activation is not supported")
        if n.op == "call_method" and n.target == "size":
            self.env[n] = _Meta()
            return
        x = self.arg(n, n.args[0]) if n.args else None
        if _is_relu(n, self.modules):
            self.env[n] = self.relu(n, x)
        elif isinstance(m, (nn.Dropout, nn.Identity)) or (n.op == "call_function" and n.target in DROPOUT_FUNCS):
            self.env[n] = x
        elif isinstance(m, nn.Conv2d):
            self.env[n] = self.conv(n, m, x)
        elif isinstance(m, nn.BatchNorm2d):
            self.env[n] = self.batchnorm(n, m, x)
        elif isinstance(m, nn.Linear):
            self.env[n] = self.linear(n, m, x)
        elif isinstance(m, nn.MaxPool2d):
            self.env[n] = self.maxpool(n, m, x)
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            self.env[n] = self.avgpool(n, m, x)
        elif (sel := leaf_rule(m)) is not None:
            self.env[n] = self.option_a(n, sel, x)
        elif isinstance(m, nn.Flatten) or (n.op == "call_function" and n.target in FLATTEN_FUNCS) or \
                (n.op == "call_method" and n.target in ("flatten", "view", "reshape")):
            self.env[n] = self.flatten(n, m, x)
        elif (n.op == "call_function" and n.target in ADD_FUNCS) or \
                (n.op == "call_method" and n.target in ("add", "add_")):
            if n.kwargs.get("alpha", 1) != 1:
                self.fail(n, "add with alpha != 1")
            self.env[n] = self.add(n, x, self.arg(n, n.args[1]))
        else:  # _check_supported let it through but nothing here knows it
            self.fail(n, "no spiking equivalent")

    # ---- layers
    def conv(self, n, m: nn.Conv2d, x):
        x = self.spikes(n, x)
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            self.fail(n, "only numeric zero padding is supported")
        args = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
                    kernel_size=m.kernel_size, in_channels=m.in_channels)
        w, b = fold_batchnorm(m.weight, m.bias, None)
        return _Pre([_Term("conv", x, w, args, name=n.target)], b if m.bias is not None else None,
                    self.shapes[n.name], name=n.target)

    def linear(self, n, m: nn.Linear, x):
        if isinstance(x, _Pre) and self.fold_avgpool and len(x.terms) == 1 and x.terms[0].kind == "avgpool" \
                and x.terms[0].flat and x.bias is None and not x.terms[0].src.signed:
            t = x.terms[0]
            w = m.weight.detach().double() * t.weight.repeat_interleave(
                m.in_features // t.weight.numel())[None, :]  # the avg pool's per-channel gain (BN folded)
            term = _Term("linear", t.src, w, dict(pool=t.args), name=n.target)
        else:
            x = self.spikes(n, x)
            term = _Term("linear", x, m.weight.detach().double(), {}, name=n.target)
        b = m.bias.detach().double() if m.bias is not None else None
        return _Pre([term], b, self.shapes[n.name], name=n.target)

    def batchnorm(self, n, m: nn.BatchNorm2d, x):
        if isinstance(x, _Spk):
            x = self.as_pre(x, n)
        if not isinstance(x, _Pre):
            self.fail(n, "BatchNorm of this value")
        _, bias = fold_batchnorm(torch.zeros(m.num_features, 1, **self.f64), x.bias, m)
        g, _ = fold_batchnorm(torch.ones(m.num_features, 1, **self.f64), None, m)
        g = g[:, 0]
        terms = []
        for t in x.terms:
            w = t.weight * g.view(-1, *([1] * (t.weight.dim() - 1)))
            terms.append(_Term(t.kind, t.src, w, t.args, t.flat, t.name))
        return _Pre(terms, bias, x.shape, x.obs, x.name)

    def maxpool(self, n, m: nn.MaxPool2d, x):
        x = self.spikes(n, x)
        if x.signed:
            self.fail(n, "max pooling of the signed input encoding (no ReLU before it)")
        node = self.add_module(n.target, SpikingMaxPool2d.from_maxpool(m), (x.node,))
        return _Spk(node, x.lam, self.shapes[n.name], depth=x.depth)

    def avgpool(self, n, m, x):
        x = self.spikes(n, x)
        args = avgpool_args(m, tuple(x.shape[-2:]))
        c = x.shape[0]
        return _Pre([_Term("avgpool", x, torch.ones(c, **self.f64), args, name=n.target)], None,
                    self.shapes[n.name], obs=n.name, name=n.target)

    def option_a(self, n, m: ChannelSelect, x):
        x = self.spikes(n, x)
        w = m.gains(torch.zeros((), **self.f64))
        return _Pre([_Term("option_a", x, w, dict(stride=m.stride, in_channels=m.in_channels), name=n.target)],
                    None, self.shapes[n.name], name=n.target)

    def flatten(self, n, m, x):
        if n.op == "call_function" or (n.op == "call_method" and n.target == "flatten"):
            start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0 if n.op == "call_function" else 0)
            end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                self.fail(n, "only flattening from dimension 1 to the end is supported")
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                self.fail(n, "only Flatten(1, -1) is supported")
        elif len(self.shapes[n.name]) != 1:  # view / reshape: only [N, -1]
            self.fail(n, "only view/reshape to [batch, features] is supported")
        if isinstance(x, _Pre) and self.fold_avgpool and len(x.terms) == 1 and x.terms[0].kind == "avgpool":
            t = x.terms[0]
            return _Pre([_Term(t.kind, t.src, t.weight, t.args, True, t.name)], x.bias, self.shapes[n.name], x.obs,
                        x.name)
        x = self.spikes(n, x)
        if len(x.shape) == 1:
            return x
        node = self.add_module(n.target if n.op == "call_module" else "flatten", SpikingFlatten(1), (x.node,))
        hw = math.prod(x.shape[1:])
        return _Spk(node, x.lam.repeat_interleave(hw), self.shapes[n.name], x.signed, x.depth)

    def add(self, n, a, b):
        if isinstance(a, _Meta) or isinstance(b, _Meta) or not isinstance(a, (_Spk, _Pre)) \
                or not isinstance(b, (_Spk, _Pre)):
            self.fail(n, "only the sum of two activations is supported")
        a, b = self.as_pre(a, n), self.as_pre(b, n)
        if a.shape != b.shape:
            self.fail(n, f"shapes {a.shape} and {b.shape} differ")
        bias = a.bias if b.bias is None else (b.bias if a.bias is None else a.bias + b.bias)
        return _Pre(a.terms + b.terms, bias, a.shape, name=a.name or b.name)

    def relu(self, n, x):
        if isinstance(x, _Spk):
            if x.signed:
                self.fail(n, "a ReLU directly on the input")
            return x  # ReLU of one-spike (non-negative) values is the identity
        if not isinstance(x, _Pre):
            self.fail(n, "ReLU of this value")
        if len(x.terms) == 1 and x.terms[0].kind == "avgpool" and x.terms[0].flat:
            return self.spikes(n, x)  # ReLU of pooled ReLU outputs: the pool's own lambda
        return self.neuron(n, x, lam_node=n.name, output="spikes")

    def output(self, n):
        v = self.arg(n, n.args[0])
        if isinstance(v, _Pre):
            v = self.neuron(n, v, lam_node=None, output="potential")
            self.graph.output(v)
            return
        if isinstance(v, _Spk):  # the model ends on a ReLU: return the decoded values
            self.graph.output(self.graph.call_function(_decode, (v.node,)))
            return
        self.fail(n, "the model must return one tensor")

    # ---- pre-activation <-> spikes
    def as_pre(self, x, n) -> _Pre:
        if isinstance(x, _Pre):
            return x
        if isinstance(x, _Spk):
            if len(x.shape) != 3:
                self.fail(n, "residual additions of fully-connected features are not supported")
            return _Pre([_Term("diag", x, torch.ones(x.shape[0], **self.f64), name="identity")], None,
                        x.shape)
        self.fail(n, "unsupported operand")

    def spikes(self, n, x) -> _Spk:
        """The spiking form of ``x``: spikes as they are; an average pool with no ReLU after it is re-encoded by
        an average-pool neuron layer (its output is non-negative, so ReLU neurons are exact)."""
        if isinstance(x, _Spk):
            return x
        if isinstance(x, _Pre) and x.obs is not None and len(x.terms) == 1 and x.terms[0].kind == "avgpool" \
                and x.bias is None and not x.terms[0].src.signed:
            return self.neuron(n, x, lam_node=x.obs, output="spikes")
        if isinstance(x, _Pre):
            self.fail(n, f"its input (from '{x.name}') is a linear layer's output with no ReLU after it; a one-spike "
                         "CNN layer needs a ReLU (or a pooling of ReLU outputs) in between")
        self.fail(n, f"its input is not an activation ({type(x).__name__})")

    def flatten_spk(self, x: _Spk) -> _Spk:
        node = self.add_module("flatten", SpikingFlatten(1), (x.node,))
        hw = math.prod(x.shape[1:])
        return _Spk(node, x.lam.repeat_interleave(hw), (x.shape[0] * hw,), x.signed, x.depth)

    # ---- neuron layers
    def neuron(self, n: fx.Node, pre: _Pre, lam_node: str | None, output: str) -> _Spk | fx.Node:
        terms = pre.terms
        kinds = [t.kind for t in terms]
        kw = dict(code=self.code, mode=self.mode, output=output)
        if len(terms) == 1 and kinds[0] == "avgpool" and terms[0].flat:  # re-encode on the map, then flatten
            t = terms[0]
            spk = self.neuron(n, _Pre([_Term(t.kind, t.src, t.weight, t.args, False, t.name)], pre.bias,
                                      self.shapes[pre.obs], pre.obs, pre.name), lam_node, output)
            return self.flatten_spk(spk) if output == "spikes" else spk
        out_c = pre.shape[0]
        is_map = len(pre.shape) == 3

        def lam(layer_wise: bool) -> Tensor:
            if lam_node is None:
                return torch.ones(out_c, **self.f64)
            return self.lam_of(lam_node, layer_wise or not self.channel_wise)

        layer: Any  # the four layer kinds share no load_normalized_ signature
        if len(terms) == 1 and kinds[0] == "conv" and is_map:
            t = terms[0]
            a = t.args
            layer = SpikingConv2d(a["in_channels"], out_c, a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                                  a["groups"], bias=pre.bias is not None, **kw).to(device=self.device, dtype=self.dtype)
            lam_out = lam(False)
            layer.load_normalized_(t.weight, pre.bias, t.src.lam, lam_out)
            name, srcs = t.name, [t.src]
        elif len(terms) == 1 and kinds[0] == "linear":
            t = terms[0]
            pool = t.args.get("pool")
            layer = SpikingFC(t.weight.shape[1], t.weight.shape[0], bias=pre.bias is not None, pool=pool,
                              **kw).to(device=self.device, dtype=self.dtype)
            # lambda of the channel each input feature comes from (pooled or not, flattening is channel-major)
            lam_in = t.src.lam.repeat_interleave(t.weight.shape[1] // t.src.lam.numel())
            lam_out = lam(True)
            layer.load_normalized_(t.weight, pre.bias, lam_in, lam_out)
            name, srcs = t.name, [t.src]
        elif len(terms) == 1 and kinds[0] == "avgpool" and pre.bias is None:
            t = terms[0]
            layer = SpikingAvgPool2d(out_c, **t.args, **kw).to(device=self.device, dtype=self.dtype)
            lam_out = lam(True)
            with torch.no_grad():
                layer.load_normalized_(t.src.lam * t.weight, lam_out)  # BN after the pool scales the gain
            name, srcs = t.name, [t.src]
        elif len(terms) == 2 and is_map and "conv" in kinds:
            main, sc = self._split_residual(n, terms)
            a = main.args
            if sc.kind == "conv":
                s = sc.args
                shortcut = dict(shortcut="conv", shortcut_in_channels=s["in_channels"], shortcut_stride=s["stride"],
                                shortcut_kernel_size=s["kernel_size"], shortcut_padding=s["padding"])
                if s["groups"] != 1 or tuple(s["dilation"]) != (1, 1):
                    self.fail(n, "grouped or dilated projection shortcuts are not supported")
            elif sc.kind == "option_a":
                shortcut = dict(shortcut="option_a", shortcut_in_channels=sc.args["in_channels"],
                                shortcut_stride=sc.args["stride"])
            elif sc.kind == "diag":
                shortcut = dict(shortcut="identity")
            else:
                self.fail(n, f"a residual shortcut of kind {sc.kind}")
            layer = SpikingResidual(a["in_channels"], out_c, a["kernel_size"], a["stride"], a["padding"],
                                    a["dilation"], a["groups"], bias=pre.bias is not None, **shortcut,
                                    **kw).to(device=self.device, dtype=self.dtype)
            lam_out = lam(False)
            layer.load_normalized_(main.weight, pre.bias, main.src.lam, sc.weight, sc.src.lam, lam_out)
            name, srcs = main.name, [main.src, sc.src]
        else:
            self.fail(n, f"a neuron integrating {' + '.join(kinds)} (supported: conv, linear, avgpool, "
                         "conv + shortcut)")
        node = self.add_module(name, layer, tuple(s.node for s in srcs))
        if output == "potential":
            return node
        lam_out = torch.where(lam_out > 0, lam_out, torch.ones_like(lam_out))  # as the layer stored it
        return _Spk(node, lam_out.expand(out_c).clone(), pre.shape, depth=max(s.depth for s in srcs) + 1)

    def _split_residual(self, n, terms) -> tuple[_Term, _Term]:
        a, b = terms
        if a.kind != "conv":
            return b, a
        if b.kind != "conv":
            return a, b
        return (a, b) if a.src.depth >= b.src.depth else (b, a)  # the deeper source is the main path


def _decode(x) -> Tensor:
    """Values (ANN units) of spikes a model returns directly."""
    return x.values()
