"""Spiking drop-in for torch_geometric.nn.GCNConv."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv

from ..coding import PhaseCode
from ..simulate import check_mode
from ..spikes import PhaseSpikes
from .aggregation import SpikingAggregation
from .base import SpikingMixin, as_spike_input, set_scale
from .linear import SpikingLinear

VARIANTS = ("signed", "relu_mp", "agg_first")


class SpikingGCNConv(nn.Module, SpikingMixin):
    r"""The graph convolution of Kipf & Welling as two one-spike layers (docs/method.md, section 11.2).

    .. math::
        \mathbf{X}' = \mathrm{ReLU}\big(\hat{\mathbf{A}}\,(\hat{\mathbf{X}}\mathbf{W}^\top) + \mathbf{b}\big)
        \;\longrightarrow\;
        \underbrace{\mathbf{M} = \mathrm{Enc}_\pm(\hat{\mathbf{X}}\mathbf{W}^\top/\boldsymbol\lambda_M)}
            _{\text{message passing}},\quad
        \underbrace{\mathbf{X}' = \mathrm{Enc}\big(\mathrm{ReLU}(\hat{\mathbf{A}}\hat{\mathbf{M}} + \mathbf{b})
            /\boldsymbol\lambda\big)}_{\text{aggregation}}

    Same constructor and ``forward(x, edge_index, edge_weight=None)`` as :class:`torch_geometric.nn.GCNConv`.
    ``x`` is spikes (from :class:`~spikegcn.nn.PhaseEncoder` or a previous spiking layer), or ``None`` / a
    sparse identity for featureless input (``X = I``, Text GCN). Variants for the signed intermediate
    :math:`\hat{\mathbf{X}}\mathbf{W}^\top` (docs/method.md, A14): ``"signed"`` (signed one-spike neurons, default),
    ``"relu_mp"`` (unsigned neurons: a premature ReLU, as a literal reading of the paper gives) and
    ``"agg_first"`` (:math:`\hat{\mathbf{A}}\hat{\mathbf{X}}` first, exact for non-negative input, needs no
    signed spikes).

    Args:
        in_channels, out_channels, improved, cached, add_self_loops, normalize, bias: as in ``GCNConv``.
        code (PhaseCode): the code of both neuron layers.
        variant (str): ``"signed"``, ``"relu_mp"`` or ``"agg_first"``.
        mode (str): ``"exact"`` or ``"functional"``.
        output (str): ``"spikes"`` (followed by ReLU in the ANN) or ``"potential"`` (output layer).
    """

    def __init__(self, in_channels: int, out_channels: int, improved: bool = False, cached: bool = False,
                 add_self_loops: bool | None = None, normalize: bool = True, bias: bool = True,
                 code: PhaseCode | None = None, variant: str = "signed", mode: str = "exact",
                 output: str = "spikes", backend: str = "auto"):
        super().__init__()
        code = code or PhaseCode(16, 1.3)
        self._init_spiking(code, mode, output, backend)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if add_self_loops is None:
            add_self_loops = normalize
        self.in_channels, self.out_channels, self.variant = in_channels, out_channels, variant
        self.improved, self.cached, self.add_self_loops, self.normalize = improved, cached, add_self_loops, normalize
        agg_first = variant == "agg_first"
        agg_ch = in_channels if agg_first else out_channels
        self.lin = SpikingLinear(in_channels, out_channels, bias=bias and agg_first, code=code,
                                 signed=(variant == "signed"), mode=mode,
                                 output=output if agg_first else "spikes", backend=backend)
        if agg_first:
            self.lin.signed = False  # ReLU (or output) after the linear map
        self.aggr = SpikingAggregation(agg_ch, code=code, improved=improved, cached=cached,
                                       add_self_loops=add_self_loops, normalize=normalize,
                                       bias=bias and not agg_first, signed=False, mode=mode,
                                       output="spikes" if agg_first else output, backend=backend)

    @property
    def weight(self) -> Tensor:
        return self.lin.weight

    @property
    def bias(self) -> Tensor | None:
        return self.lin.bias if self.variant == "agg_first" else self.aggr.bias

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        self.aggr.reset_parameters()

    def set_mode(self, mode: str) -> "SpikingGCNConv":
        self.mode = check_mode(mode)
        self.lin.set_mode(mode)
        self.aggr.set_mode(mode)
        return self

    @classmethod
    def from_gcnconv(cls, conv: GCNConv, code: PhaseCode | None = None, mp_scale: Tensor | float | None = None,
                     scale: Tensor | float | None = None, **kwargs) -> "SpikingGCNConv":
        """Copy a trained ``GCNConv`` (weights, bias, flags); ``mp_scale``/``scale`` are the calibrated
        lambdas of the message-passing and aggregation neurons (``"agg_first"``: aggregation, then output)."""
        if not isinstance(conv, GCNConv):
            raise TypeError(f"from_gcnconv expects a torch_geometric.nn.GCNConv, got {type(conv).__name__}")
        layer = cls(conv.in_channels, conv.out_channels, improved=conv.improved, cached=conv.cached,
                    add_self_loops=conv.add_self_loops, normalize=conv.normalize, bias=conv.bias is not None,
                    code=code, **kwargs)
        with torch.no_grad():
            layer.lin.weight.copy_(conv.lin.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        layer.set_scales(mp_scale, scale)
        return layer

    @torch.no_grad()
    def set_scales(self, mp_scale: Tensor | float | None, scale: Tensor | float | None) -> None:
        first, second = (self.aggr, self.lin) if self.variant == "agg_first" else (self.lin, self.aggr)
        if mp_scale is not None:
            set_scale(first.scale, mp_scale)
        if scale is not None:
            set_scale(second.scale, scale)

    @torch.no_grad()
    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None = None, start: int = 0) -> PhaseSpikes | Tensor:
        inp = as_spike_input(x, self.in_channels)
        Tw = self.code.Tw
        if self.variant == "agg_first":
            # A-hat X is non-negative after a ReLU (no signed spikes needed); raw signed features need signed
            # aggregation neurons
            sign = getattr(inp, "sign", None)
            self.aggr.signed = sign is not None and bool((sign < 0).any())
            h = self.aggr(inp, edge_index, edge_weight, start=start + Tw)
            out = self.lin(h, start=start + 2 * Tw)
        else:
            m = self.lin(inp, start=start + Tw)
            out = self.aggr(m, edge_index, edge_weight, start=start + 2 * Tw)
        self.lin.stats[0].name, self.aggr.stats[0].name = "mp", "agg"
        parts = (self.aggr, self.lin) if self.variant == "agg_first" else (self.lin, self.aggr)  # execution order
        self.stats = [p.stats[0] for p in parts]
        return out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, variant={self.variant!r}, "
                f"{self._spiking_repr()})")
