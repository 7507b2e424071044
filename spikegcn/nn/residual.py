r"""The residual join of a ResNet block as one layer of one-spike neurons (docs/method.md, section 8.4 and A10).

The block output :math:`\mathrm{ReLU}(\mathrm{BN}_2(\mathrm{conv}_2(h)) + \mathrm{sc}(x))` becomes a neuron layer
:math:`l` that integrates two synaptic inputs: the main path from the block's hidden layer :math:`h` (layer
:math:`l-1`, conv2 with BN2 folded) and the shortcut from the block input :math:`x` (layer :math:`l-2`):

.. math::
    \hat a^l_k = \mathrm{Enc}\Big(\tilde b_k + \sum_c \tilde W_{kc} \star \hat h_c
        + \sum_{c} S_{kc}\,\hat x_c\Big), \qquad
    \tilde W_{kc} = W'_{kc}\frac{\lambda^{l-1}_c}{\lambda^l_k},

with the shortcut map :math:`S` one of

* ``"identity"``: diagonal, :math:`S_{kk} = \lambda^{l-2}_k/\lambda^l_k`;
* ``"option_a"`` (parameter-free CIFAR shortcut): spatial subsampling by ``stride`` and zero channel padding,
  :math:`S_{k, k - p} = \lambda^{l-2}_{k-p}/\lambda^l_k` for the ``pad_front`` offset :math:`p`, zero for the
  padded channels;
* ``"conv"`` (projection, "option B"): a convolution with its BN folded, normalised like the main path.

BN is folded into the weights of both paths (one threshold cannot absorb two BNs, docs/method.md, section 7). The
ReLU follows the addition, so :math:`\lambda^l` is the block output's scale. In exact mode the shortcut spikes keep
their own, earlier timing: the block input's window opened :math:`T_w` phases before the hidden layer's, so at output
phase :math:`t` the join sees hidden phases up to :math:`t + T_w` and block-input phases up to :math:`t + 2T_w`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..coding import PhaseCode
from ..kernels.conv_cpu import ConvForm
from .base import set_scale
from .conv import OneSpikeLayer, SpikingConv2d, _pair, _window_counts
from .leaves import leaf_rule

__all__ = ["SpikingResidual"]

_SHORTCUTS = ("identity", "option_a", "conv")


class SpikingResidual(OneSpikeLayer):
    r"""Residual join neuron layer: ``forward(h, x)`` with ``h`` the main-path spikes (input of conv2) and ``x``
    the block-input spikes (input of the shortcut).

    Args:
        in_channels (int): channels of ``h``.
        out_channels (int): output channels.
        kernel_size, stride, padding, dilation, groups: of the main-path convolution.
        shortcut (str): ``"identity"``, ``"option_a"`` or ``"conv"``.
        shortcut_in_channels (int, optional): channels of ``x`` (default: ``out_channels`` for identity,
            ``in_channels`` otherwise).
        shortcut_stride (int): subsampling of ``"option_a"`` / stride of ``"conv"``.
        shortcut_kernel_size, shortcut_padding: of a ``"conv"`` shortcut (default 1x1, no padding).
        bias (bool): bias (initial potential).
        code, mode, output: see :class:`~spikegcn.nn.conv.OneSpikeLayer`.
    """

    num_inputs = 2
    kind = "residual"

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1, dilation=1,
                 groups: int = 1, shortcut: str = "identity", shortcut_in_channels: int | None = None,
                 shortcut_stride=1, shortcut_kernel_size=1, shortcut_padding=0, bias: bool = True,
                 code: PhaseCode | None = None, mode: str = "exact", output: str = "spikes"):
        super().__init__()
        if shortcut not in _SHORTCUTS:
            raise ValueError(f"shortcut must be one of {_SHORTCUTS}, got {shortcut!r}")
        self._init_layer(out_channels, code, mode, output)
        # the main path is a plain spiking conv's synapses; keep it as a child for its weights and fan-out
        self.main = SpikingConv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                  bias=False, code=self.code)
        self.in_channels = int(in_channels)
        self.shortcut = shortcut
        if shortcut_in_channels is None:
            shortcut_in_channels = out_channels if shortcut == "identity" else in_channels
        self.shortcut_in_channels = int(shortcut_in_channels)
        self.shortcut_stride = _pair(shortcut_stride)
        if shortcut == "identity":
            if self.shortcut_in_channels != out_channels:
                raise ValueError(f"identity shortcut needs equal channels, got {shortcut_in_channels} -> "
                                 f"{out_channels}")
            self.shortcut_weight = nn.Parameter(torch.empty(out_channels))
        elif shortcut == "option_a":
            if self.shortcut_in_channels > out_channels:
                raise ValueError("option-A shortcut cannot reduce channels")
            self.pad_front = (out_channels - self.shortcut_in_channels) // 2
            self.pad_back = out_channels - self.shortcut_in_channels - self.pad_front
            self.shortcut_weight = nn.Parameter(torch.empty(out_channels))
        else:
            self.shortcut_conv = SpikingConv2d(self.shortcut_in_channels, out_channels, shortcut_kernel_size,
                                               shortcut_stride, shortcut_padding, bias=False, code=self.code)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @property
    def weight(self) -> Tensor:
        """Main-path (conv2) normalised weights."""
        return self.main.weight

    def reset_parameters(self) -> None:
        self.main.reset_parameters()
        if self.shortcut == "conv":
            self.shortcut_conv.reset_parameters()
        else:
            nn.init.ones_(self.shortcut_weight)
            if self.shortcut == "option_a":
                with torch.no_grad():
                    self.shortcut_weight[: self.pad_front] = 0
                    self.shortcut_weight[self.pad_front + self.shortcut_in_channels:] = 0
        if self.bias is not None:
            fan_in = self.main.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        self.scale.fill_(1.0)
        self.weight_bits = None

    @classmethod
    def from_block(cls, conv2: nn.Conv2d, bn2: nn.BatchNorm2d | None, shortcut: nn.Module,
                   in_scale: Tensor | float = 1.0, shortcut_in_scale: Tensor | float = 1.0,
                   scale: Tensor | float = 1.0, **kwargs) -> "SpikingResidual":
        r"""From the trained pieces of a basic block: the main path's ``conv2`` and ``bn2`` and the ``shortcut``
        (:class:`torch.nn.Identity`, a shortcut registered in :mod:`spikegcn.nn.leaves`, or ``Sequential(Conv2d,
        BatchNorm2d)``); ``in_scale`` = :math:`\lambda^{l-1}` (conv2's input), ``shortcut_in_scale`` =
        :math:`\lambda^{l-2}` (the block input), ``scale`` = :math:`\lambda^l` (the block output)."""
        from .conv import fold_batchnorm

        w, b = fold_batchnorm(conv2.weight, conv2.bias, bn2)
        sc_kw: dict = {}
        if isinstance(shortcut, nn.Identity):
            sc_kw, sc_w = dict(shortcut="identity"), w.new_ones(conv2.out_channels)
        elif (sel := leaf_rule(shortcut)) is not None:  # e.g. the CIFAR ResNets' option-A shortcut
            if sel.out_channels != conv2.out_channels:
                raise ValueError(f"shortcut gives {sel.out_channels} channels, conv2 {conv2.out_channels}")
            sc_kw = dict(shortcut="option_a", shortcut_in_channels=sel.in_channels, shortcut_stride=sel.stride)
            sc_w = sel.gains(w)
        elif isinstance(shortcut, nn.Sequential) and isinstance(shortcut[0], nn.Conv2d):
            pc = shortcut[0]
            sc_w, sc_b = fold_batchnorm(pc.weight, pc.bias, shortcut[1] if len(shortcut) > 1 else None)
            b = b + sc_b  # one neuron: the two biases add
            sc_kw = dict(shortcut="conv", shortcut_in_channels=pc.in_channels, shortcut_stride=pc.stride,
                         shortcut_kernel_size=pc.kernel_size, shortcut_padding=pc.padding)
        else:
            raise TypeError(f"unsupported shortcut {type(shortcut).__name__}")
        layer = cls(conv2.in_channels, conv2.out_channels, conv2.kernel_size, conv2.stride, conv2.padding,
                    conv2.dilation, conv2.groups, bias=True, **sc_kw, **kwargs)
        return layer.load_normalized_(w, b, in_scale, sc_w, shortcut_in_scale, scale)

    @torch.no_grad()
    def load_normalized_(self, weight: Tensor, bias: Tensor | None, in_scale: Tensor | float,
                         shortcut_weight: Tensor, shortcut_in_scale: Tensor | float,
                         scale: Tensor | float) -> "SpikingResidual":
        r"""Set the normalised weights from ANN units (BN folded): main ``weight``/``bias`` with input scale
        :math:`\lambda^{l-1}`, ``shortcut_weight`` (``[out]`` diagonal gains for identity / option A, in output
        channel order; the conv weight for ``"conv"``) with input scale :math:`\lambda^{l-2}`, and the output
        scale :math:`\lambda^l`."""
        lam_out = set_scale(self.scale, scale)
        self.main.load_normalized_(weight, None, in_scale, lam_out)
        self.main.scale.fill_(1.0)  # the child holds synapses only; the neuron is this layer
        if self.bias is not None:
            b = lam_out.new_zeros(self.out_channels) if bias is None else bias.double()
            self.bias.copy_(b / lam_out)
        lam_sc = torch.as_tensor(shortcut_in_scale, dtype=torch.float64, device=lam_out.device).expand(
            self.shortcut_in_channels)
        if self.shortcut == "conv":
            self.shortcut_conv.load_normalized_(shortcut_weight, None, lam_sc, lam_out)
            self.shortcut_conv.scale.fill_(1.0)
            return self
        if self.shortcut == "option_a":  # input channel c feeds output channel pad_front + c
            lam_sc = F.pad(lam_sc, (self.pad_front, self.pad_back))
        self.shortcut_weight.copy_(shortcut_weight.double() * lam_sc / lam_out)
        return self

    # ---- synapses
    def synapse(self, i: int, x: Tensor) -> Tensor:
        if i == 0:
            return self.main.synapse(0, x)
        if self.shortcut == "conv":
            return self.shortcut_conv.synapse(0, x)
        if self.shortcut == "option_a":
            s = self.shortcut_stride
            x = F.pad(x[:, :, :: s[0], :: s[1]], (0, 0, 0, 0, self.pad_front, self.pad_back))
        return x * self.shortcut_weight.view(-1, 1, 1)

    def diagonal_synapse(self, i: int) -> tuple[Tensor, int, tuple[int, int]] | None:
        if i == 0 or self.shortcut == "conv":
            return None
        if self.shortcut == "identity":  # synapse() applies no stride to an identity shortcut
            return self.shortcut_weight, 0, (1, 1)
        return self.shortcut_weight, self.pad_front, self.shortcut_stride

    def conv_form(self, i: int) -> ConvForm | None:
        if i == 0:
            return self.main.conv_form(0)
        if self.shortcut == "conv":
            return self.shortcut_conv.conv_form(0)
        # a diagonal 1 x 1 conv: input channel c feeds output channel c (+ pad_front for option A) with its gain
        w = torch.diag(self.shortcut_weight.detach())
        if self.shortcut == "option_a":
            w = w[self.pad_front: self.pad_front + self.shortcut_in_channels]
        return w[None, None], self.shortcut_stride, (0, 0), (1, 1)

    def fanout(self, i: int, in_shape: torch.Size) -> Tensor:
        if i == 0:
            return self.main.fanout(0, in_shape)
        if self.shortcut == "conv":
            return self.shortcut_conv.fanout(0, in_shape)
        if self.shortcut == "identity":
            return torch.tensor(1.0, device=self.scale.device)
        # option A: only the subsampled positions have a synapse (one, to channel pad_front + c)
        hw = tuple(in_shape[-2:])
        s = self.shortcut_stride
        return self._cached_fanout(("sc", hw), lambda: _window_counts(hw, lambda x: x[:, :, :: s[0], :: s[1]],
                                                                      self.scale.device))

    def macs(self, i: int, in_shape: torch.Size) -> float:
        if i == 0:
            return self.main.macs(0, in_shape)
        # a parameter-free shortcut is an addition in the ANN, not a MAC; a projection counts (docs/method.md, 10)
        return self.shortcut_conv.macs(0, in_shape) if self.shortcut == "conv" else 0.0

    def weight_tensors(self) -> list[Tensor]:
        return [self.main.weight, self.shortcut_conv.weight if self.shortcut == "conv" else self.shortcut_weight]

    def __repr__(self) -> str:
        m = self.main
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, kernel_size={m.kernel_size}, "
                f"stride={m.stride}, shortcut={self.shortcut!r}, shortcut_in_channels={self.shortcut_in_channels}, "
                f"shortcut_stride={self.shortcut_stride}, {self._layer_repr()})")
