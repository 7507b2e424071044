r"""Converting CNNs (Conv2d/BatchNorm2d/ReLU/pooling/Linear, residual blocks) through ``torch.fx``.

1. **Capture**: :class:`CNNTracer` traces the forward with the supported layers as leaves (``Conv2d``,
   ``BatchNorm2d``, ``ReLU``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Flatten``, ``Linear``,
   ``Dropout``, ``Identity`` and the shortcuts registered in :mod:`spikegcn.nn.leaves`);
   ``F.relu``/``torch.relu``/``x.relu()``, ``+``/``torch.add``, ``torch.flatten``/``x.flatten(1)``/
   ``x.view(x.size(0), -1)`` and ``F.dropout`` are understood as functions. Anything else raises
   :class:`UnsupportedModuleError` naming it.
2. **Observe**: an :class:`torch.fx.Interpreter` runs the calibration images batch by batch and keeps, for every
   ReLU and average-pool output, the per-channel maximum (or all values, for a percentile), and :math:`\max|x|`.
3. **Calibrate**: :math:`\lambda` per channel for conv outputs, one per layer for fully-connected and pooling
   outputs (docs/method.md, A5; ``channel_wise=False`` makes all of them layer-wise), :math:`\lambda^L = 1` for
   the output.
4. **Build**: the graph is evaluated symbolically. A conv/linear/pool output is a *pre-activation*: a sum of
   synaptic terms from spike sources plus a bias, in ANN units. BatchNorm scales the terms and shifts the bias (it
   is folded into the weights everywhere, docs/method.md, A11); ``+`` merges terms (a spike source added directly is an
   identity term); a ReLU turns a pre-activation into a neuron layer: :class:`~spikegcn.nn.SpikingConv2d`,
   :class:`~spikegcn.nn.SpikingFC`, :class:`~spikegcn.nn.SpikingAvgPool2d` or, for conv + shortcut,
   :class:`~spikegcn.nn.SpikingResidual`. Max pooling becomes the first-spike gate
   :class:`~spikegcn.nn.SpikingMaxPool2d`; an average pool that no ReLU follows is re-encoded by an average-pool
   neuron layer, or folded into the next fully-connected layer (``fold_avgpool=True``). The value the model
   returns becomes the output layer: it integrates without spiking and returns the logits.

The result is a :class:`SpikingCNN` with the model's forward signature: ``snn(images) -> logits``. Capture and
observation live in :mod:`spikegcn.conversion.cnn_capture`, the symbolic build in :mod:`spikegcn.conversion.cnn_build`.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, fx, nn

from ..coding import PhaseCode
from ..energy import LayerStats
from ..nn.conv import OneSpikeLayer
from ..simulate import check_mode
from .cnn_build import CNNBuilder
from .cnn_capture import CNNTracer, batches, check_supported, observe
from .graph import SpikingModel

__all__ = ["SpikingCNN", "convert_cnn"]


# --------------------------------------------------------------------------------------------- the spiking model
class SpikingCNN(SpikingModel):
    """A converted CNN: ``forward(images) -> logits`` (the output layer's potential), plus per-layer statistics,
    the energy report (Eq. 6) and mode switching. :meth:`run` evaluates many images in batches and keeps the
    statistics summed over all of them."""

    _total_stats: list[LayerStats] | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_forward_pre_hook(_forget_totals)

    def spiking_layers(self) -> list[tuple[str, nn.Module]]:
        """Neuron layers in execution order (a residual join's inner synapse modules are its own)."""
        mods = dict(self.named_modules())
        out = []
        for n in self.graph.nodes:
            if n.op == "call_module" and isinstance(mods[n.target], OneSpikeLayer):
                out.append((n.target, mods[n.target]))
        return out

    def layer_stats(self) -> list[LayerStats]:
        """Statistics of the last :meth:`forward` (or summed over the last :meth:`run`): one entry per neuron
        layer, plus one per residual shortcut (``<join>.shortcut``)."""
        if self._total_stats is not None:
            return [LayerStats(**st.__dict__) for st in self._total_stats]
        return self._current_stats()

    def _current_stats(self) -> list[LayerStats]:
        out = []
        for name, m in self.spiking_layers():
            for st in m.stats:
                st = LayerStats(**st.__dict__)
                st.name = name + (".shortcut" if st.kind == "shortcut" else "")
                out.append(st)
        return out

    @torch.no_grad()
    def run(self, images: Tensor | Iterable, batch_size: int = 200) -> Tensor:
        """Logits of all ``images`` (a tensor, or an iterable of batches / ``(x, y)`` pairs), computed in batches;
        afterwards :meth:`layer_stats` and :meth:`energy` cover all of them."""
        outs, total = [], None
        for xb in batches(images, batch_size):
            outs.append(self(xb))
            cur = self._current_stats()
            total = cur if total is None else [_add_stats(a, b) for a, b in zip(total, cur)]
        self._total_stats = total
        return torch.cat(outs)


def _forget_totals(module: "SpikingCNN", args) -> None:
    module._total_stats = None  # a plain forward: layer_stats() is that forward's again


def _add_stats(a: LayerStats, b: LayerStats) -> LayerStats:
    return LayerStats(name=a.name, macs=a.macs + b.macs, in_neurons=a.in_neurons + b.in_neurons,
                      in_spikes=a.in_spikes + b.in_spikes, additions=a.additions + b.additions,
                      out_neurons=a.out_neurons + b.out_neurons, out_spikes=a.out_spikes + b.out_spikes, kind=a.kind,
                      saturated_neurons=None if None in (a.saturated_neurons, b.saturated_neurons)
                      else a.saturated_neurons + b.saturated_neurons)


# --------------------------------------------------------------------------------------------- conversion
def convert_cnn(model: nn.Module, data: Tensor | Iterable, code: PhaseCode | None = None, mode: str = "exact",
                percentile: float | None = None, channel_wise: bool = True, input_coding: str = "binary",
                int8: bool = False, fold_avgpool: bool = False, batch_size: int = 256) -> SpikingCNN:
    r"""Convert a trained ReLU CNN into a one-spike SNN.

    Args:
        model: the ANN (eval-mode BatchNorm statistics are used).
        data: calibration images ``[N, C, H, W]`` (as the model takes them), or an iterable of batches or
            ``(images, labels)`` pairs. docs/method.md, A4: the max over a few thousand training images.
        code: code of every neuron layer (default ``PhaseCode(16, 1.3)``, ``Tw = T``); the input has ``code.T``
            binary phases.
        mode: ``"exact"`` (phase by phase with ``code.Tw``) or ``"functional"`` (the quantised ANN; equal to exact
            when ``Tw >= T - 1``).
        percentile: lambda = this percentile of each channel's ReLU output instead of its max (keeps all
            calibration activations in memory).
        channel_wise: lambda per conv output channel (default); ``False``: one per layer everywhere (ablation).
        input_coding: ``"binary"`` multi-spike input (default, docs/method.md, section 1.1) or ``"single"`` spike
            input with the hidden code (Table VII ablation).
        int8: quantise the normalised weights to INT8, symmetric per output channel (Table VI ablation).
        fold_avgpool: fold an average pool that feeds a fully-connected layer into it (docs/method.md, A8 option)
            instead of re-encoding it with an average-pool neuron layer.
        batch_size: calibration batch size.

    Returns:
        a :class:`SpikingCNN`.

    Raises:
        UnsupportedModuleError: naming the first module or function that has no spiking equivalent.
    """
    code = code if code is not None else PhaseCode(16, 1.3)
    if not isinstance(code, PhaseCode):
        raise TypeError(f"code must be a PhaseCode, got {type(code).__name__}")
    check_mode(mode)
    if input_coding not in ("binary", "single"):
        raise ValueError(f"input_coding must be 'binary' or 'single', got {input_coding!r}")
    model = model.eval()
    gm = fx.GraphModule(model, CNNTracer().trace(model), class_name=type(model).__name__)
    modules = dict(gm.named_modules())
    check_supported(gm, modules)

    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    obs = observe(gm, modules, data, percentile, batch_size, dtype)

    b = CNNBuilder(gm, modules, code, mode, obs.shapes, obs.lam_of, channel_wise, fold_avgpool, dtype, device)
    b.encode_input(input_coding, obs.in_max)
    for n in gm.graph.nodes:
        if n.op != "placeholder":
            b.visit(n)
    b.graph.lint()
    snn = SpikingCNN(b.root, b.graph, class_name="Spiking" + type(model).__name__)
    snn.to(device=device, dtype=dtype)
    if int8:
        for _, m in snn.spiking_layers():
            m.quantize_weights_(8)
    return snn.eval()
