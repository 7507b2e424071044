r"""Pooling for one-spike CNNs: max pooling as a first-spike gate, average pooling as a neuron layer.

**Max pooling** (docs/method.md, A9): within a window the earliest spike carries the largest value (all inputs of a
channel share one code and one :math:`\lambda_c`, and :math:`Q^{-(t-1)}` decreases with :math:`t`), so passing on the
first spike and ignoring the rest is exactly :math:`\max`:

.. math::
    t_{out} = \min_{i \in \text{window}} t_i \;(\text{silent inputs excluded}),\qquad
    \mathrm{Enc}(\max_i a_i) = \max_i \mathrm{Enc}(a_i).

It adds no wait (the window keeps its start), no neurons and no additions; "no spike" equals zero padding after a
ReLU.

**Average pooling** (docs/method.md, A8, the default): a neuron layer with fixed weights :math:`1/k^2` (depthwise) and a
layer-wise output scale,

.. math::
    \hat a^{l}_c = \mathrm{Enc}\Big(\frac{\lambda^{l-1}_c}{\lambda^l}\,\mathrm{avg}_{k\times k}(\hat a^{l-1}_c)\Big),

which re-encodes (one more :math:`T_w`). The alternative, folding the pool into the next fully-connected layer, is
:class:`~spikegcn.nn.SpikingFC` with ``pool=...``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..coding import PhaseCode
from ..kernels.conv_cpu import ConvForm
from ..spikes import PhaseSpikes
from .base import set_scale
from .conv import CNNSpikes, OneSpikeLayer, _pair, _window_counts

__all__ = ["SpikingMaxPool2d", "SpikingAvgPool2d"]


class SpikingMaxPool2d(nn.Module):
    r"""Max pooling of one-spike (unsigned) spikes as a first-spike pass-through gate: the output neuron of a
    window fires at the phase of the window's earliest input spike; later spikes are ignored. Exact in both
    simulation modes and with any wait (the gate opens on arrival).

    Args:
        kernel_size, stride, padding, dilation, ceil_mode: as :class:`torch.nn.MaxPool2d`.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.ceil_mode = bool(ceil_mode)
        self.stats: list = []

    @classmethod
    def from_maxpool(cls, pool: nn.MaxPool2d) -> "SpikingMaxPool2d":
        if pool.return_indices:
            raise ValueError("MaxPool2d(return_indices=True) cannot be converted")
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: CNNSpikes) -> PhaseSpikes:
        if not isinstance(x, PhaseSpikes) or x.sign is not None:
            raise TypeError("SpikingMaxPool2d gates unsigned one-spike (ReLU) spikes; the earliest spike is the "
                            f"largest value only for those, got {type(x).__name__}"
                            + (" with signs" if isinstance(x, PhaseSpikes) else ""))
        args = (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        if x.phase.dtype == torch.int8 and x.phase.device.type in ("cpu", "meta"):
            # -phase read as a byte is a priority: silent 0 -> 0, phase k (1..127) -> 256 - k, so the earliest
            # spike wins and any spike beats silence; one negation each way around the pooling
            m = F.max_pool2d(torch.neg(x.phase).view(torch.uint8), *args)
            phase = torch.neg(m.view(torch.int8))
        else:  # int16 phases, or a GPU (its max_pool2d takes floats only): priority T + 1 - phase, 0 when silent,
            # as float32 (exact: priorities <= MAX_T + 1)
            T, p = x.code.T, x.phase.to(torch.float32)
            m = F.max_pool2d(torch.where(p > 0, T + 1 - p, 0), *args)
            phase = torch.where(m > 0, T + 1 - m, 0).to(x.phase.dtype)
        return PhaseSpikes(phase=phase, code=x.code, scale=x.scale, sign=None, start=x.start)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding})")


class SpikingAvgPool2d(OneSpikeLayer):
    r"""Average pooling as a layer of one-spike neurons with a layer-wise output scale :math:`\lambda^l`.

    .. math::
        \hat a^l_c = \mathrm{Enc}\big(g_c \,\mathrm{avg}(\hat a^{l-1}_c)\big), \qquad g_c = \lambda^{l-1}_c/\lambda^l

    (the average keeps :class:`torch.nn.AvgPool2d`'s padding and divisor rules). :math:`g_c` is the only weight
    per channel.

    Args:
        channels (int): channels.
        kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override: as
            :class:`torch.nn.AvgPool2d`.
        code, mode, output: see :class:`~spikegcn.nn.conv.OneSpikeLayer`.
    """

    kind = "avgpool"

    def __init__(self, channels: int, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None,
                 code: PhaseCode | None = None, mode: str = "exact", output: str = "spikes"):
        super().__init__()
        self._init_layer(channels, code, mode, output)
        self.channels = int(channels)
        ks = _pair(kernel_size)
        self.pool: dict[str, Any] = dict(
            kernel_size=ks, stride=_pair(stride) if stride is not None else ks, padding=_pair(padding),
            ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad), divisor_override=divisor_override)
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        self.scale.fill_(1.0)
        self.weight_bits = None

    @classmethod
    def from_avgpool(cls, pool: nn.AvgPool2d | nn.AdaptiveAvgPool2d, channels: int,
                     in_size: tuple[int, int] | None = None, in_scale: Tensor | float = 1.0,
                     scale: Tensor | float = 1.0, **kwargs) -> "SpikingAvgPool2d":
        """From :class:`torch.nn.AvgPool2d`, or :class:`torch.nn.AdaptiveAvgPool2d` with ``in_size`` (divisible
        by its output size); ``in_scale`` per input channel, ``scale`` the layer-wise output lambda."""
        layer = cls(channels, **avgpool_args(pool, in_size), **kwargs)
        layer.load_normalized_(in_scale, scale)
        return layer

    @torch.no_grad()
    def load_normalized_(self, in_scale: Tensor | float, scale: Tensor | float) -> "SpikingAvgPool2d":
        lam_in = torch.as_tensor(in_scale, dtype=torch.float64, device=self.weight.device).expand(self.channels)
        lam_out = set_scale(self.scale, scale)
        self.weight.copy_(lam_in / lam_out)
        return self

    def synapse(self, i: int, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, **self.pool) * self.weight.view(-1, 1, 1)

    def conv_form(self, i: int) -> ConvForm | None:
        p = self.pool
        if tuple(p["padding"]) != (0, 0) or p["ceil_mode"] or p["divisor_override"] is not None:
            return None
        kh, kw = p["kernel_size"]  # a depthwise conv with the window's mean weights
        w = torch.diag(self.weight.detach() / (kh * kw))
        return w.expand(kh, kw, *w.shape), p["stride"], (0, 0), (1, 1)

    def fanout(self, i: int, in_shape: torch.Size) -> Tensor:
        hw = tuple(in_shape[-2:])
        pool = {**self.pool, "divisor_override": 1}  # window sums: d(sum)/dx = windows covering x
        return self._cached_fanout(hw, lambda: _window_counts(hw, lambda x: F.avg_pool2d(x, **pool),
                                                              self.weight.device))

    def macs(self, i: int, in_shape: torch.Size) -> float:
        return 0.0  # pooling is not counted as ANN MACs (docs/method.md, section 10); its SNN additions are

    def weight_tensors(self) -> list[Tensor]:
        return [self.weight]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, kernel_size={self.pool['kernel_size']}, "
                f"stride={self.pool['stride']}, {self._layer_repr()})")


def avgpool_args(pool: nn.AvgPool2d | nn.AdaptiveAvgPool2d, in_size: tuple[int, int] | None = None) -> dict:
    """:func:`torch.nn.functional.avg_pool2d` keyword arguments of an average-pool module (an adaptive pool is
    turned into the fixed pool it equals on ``in_size``, which must be divisible by its output size)."""
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        if in_size is None:
            raise ValueError("converting AdaptiveAvgPool2d needs the input size")
        out = pool.output_size if isinstance(pool.output_size, (tuple, list)) else (pool.output_size,) * 2
        out = tuple(in_size[i] if o is None else int(o) for i, o in enumerate(out))
        if any(s % o for s, o in zip(in_size, out)):
            raise ValueError(f"AdaptiveAvgPool2d({pool.output_size}) on a {tuple(in_size)} input has unequal "
                             "windows; only divisible sizes are supported")
        k = tuple(s // o for s, o in zip(in_size, out))
        return dict(kernel_size=k, stride=k, padding=0, ceil_mode=False, count_include_pad=True,
                    divisor_override=None)
    if not isinstance(pool, nn.AvgPool2d):
        raise TypeError(f"expected AvgPool2d or AdaptiveAvgPool2d, got {type(pool).__name__}")
    return dict(kernel_size=_pair(pool.kernel_size),
                stride=_pair(pool.stride) if pool.stride is not None else _pair(pool.kernel_size),
                padding=_pair(pool.padding), ceil_mode=pool.ceil_mode, count_include_pad=pool.count_include_pad,
                divisor_override=pool.divisor_override)
