"""Spiking linear layer (message passing X W): one-spike neurons after a dense synaptic map."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..coding import PhaseCode
from ..simulate import DenseOp, run_layer
from ..spikes import PhaseSpikes
from .base import SpikingMixin, as_spike_input, set_scale


class SpikingLinear(nn.Module, SpikingMixin):
    r"""One-spike neurons after a linear map, node by node (message passing).

    .. math::
        \mathbf{x}'_n = \mathrm{Enc}\!\left(\frac{\mathbf{W}\hat{\mathbf{x}}_n + \mathbf{b}}{\boldsymbol\lambda}\right)

    where :math:`\hat{\mathbf{x}}_n` is the value the input spikes of node :math:`n` carry, :math:`\boldsymbol\lambda`
    the per-channel output scale (calibrated maximum) and Enc the one-spike encoder of ``code`` (exact mode:
    phase by phase with wait ``code.Tw``). Without a ReLU after it in the ANN the neurons are **signed**
    (docs/method.md, A14): they fire on :math:`|P|` and carry its sign.

    Args:
        in_channels (int): input features (for featureless input ``X = I``: the number of nodes).
        out_channels (int): output features.
        bias (bool): learnable bias (initial potential).
        code (PhaseCode): output code.
        signed (bool): signed neurons (default) or ReLU neurons.
        mode (str): ``"exact"`` or ``"functional"``.
        output (str): ``"spikes"`` (hidden layer) or ``"potential"`` (output layer, no spikes).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, code: PhaseCode | None = None,
                 signed: bool = True, mode: str = "exact", output: str = "spikes", backend: str = "auto"):
        super().__init__()
        self._init_spiking(code or PhaseCode(16, 1.3), mode, output, backend)
        self.in_channels, self.out_channels, self.signed = in_channels, out_channels, signed
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.register_buffer("scale", torch.ones(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels) if self.in_channels > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        self.scale.fill_(1.0)

    @classmethod
    def from_linear(cls, lin: nn.Module, scale: Tensor | float | None = None, **kwargs) -> "SpikingLinear":
        """From ``torch.nn.Linear`` or ``torch_geometric.nn.Linear`` (weights copied)."""
        layer = cls(lin.in_channels if hasattr(lin, "in_channels") else lin.in_features,
                    lin.out_channels if hasattr(lin, "out_channels") else lin.out_features,
                    bias=lin.bias is not None, **kwargs)
        with torch.no_grad():
            layer.weight.copy_(lin.weight)
            if lin.bias is not None:
                layer.bias.copy_(lin.bias)
            if scale is not None:
                set_scale(layer.scale, scale)
        return layer

    @torch.no_grad()
    def forward(self, x, start: int = 0) -> PhaseSpikes | Tensor:
        inp = as_spike_input(x, self.in_channels)
        out, st = run_layer(inp, DenseOp(self.weight), self.code, self.bias, self.scale, signed=self.signed,
                            mode=self.mode, output=self.output, name=self._get_name(), start=start,
                            dtype=self.weight.dtype, backend=self.backend)
        self.stats = [st]
        return out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"signed={self.signed}, {self._spiking_repr()})")
