r"""Registry of leaf modules that the converters know by what they compute, not by their class.

The core never imports a model zoo: a model library registers its parameter-free shortcut modules here when it is
imported (:mod:`spikegcn.vision.models` registers its ``OptionAShortcut``), each with a *rule* that describes the
module as a synaptic operator the spiking layers already have. The CNN converter
(:class:`~spikegcn.conversion.cnn_capture.CNNTracer`) keeps registered modules as leaves of the traced graph, and
:meth:`~spikegcn.nn.SpikingResidual.from_block` accepts them as shortcuts.

The one operator so far is :class:`ChannelSelect`: subsample by a stride and place input channel :math:`c` at
output channel :math:`p + c` with :math:`p = \lfloor (C_{out} - C_{in}) / 2 \rfloor`, all other output channels
zero (the "option A" shortcut of the CIFAR ResNets, a diagonal 0/1 synapse map; ``shortcut="option_a"`` of
:class:`~spikegcn.nn.SpikingResidual`)::

    register_leaf(MyShortcut, lambda m: ChannelSelect(m.in_channels, m.out_channels, m.stride))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

__all__ = ["ChannelSelect", "register_leaf", "leaf_types", "leaf_rule"]


@dataclass(frozen=True)
class ChannelSelect:
    r"""A fixed channel selection: ``y[:, pad_front + c] = x[:, c, ::stride, ::stride]`` for
    ``c < in_channels``, zero on the other ``out_channels - in_channels`` output channels, with
    ``pad_front = (out_channels - in_channels) // 2`` (the zero padding split evenly, the odd one at the back)."""

    in_channels: int
    out_channels: int
    stride: int

    def __post_init__(self) -> None:
        if not 0 < self.in_channels <= self.out_channels:
            raise ValueError(f"a channel selection maps {self.in_channels} input channels into {self.out_channels}: "
                             "it needs 0 < in_channels <= out_channels")

    @property
    def pad_front(self) -> int:
        return (self.out_channels - self.in_channels) // 2

    def gains(self, like: Tensor) -> Tensor:
        """The ``[out_channels]`` diagonal 0/1 gains, with the device and dtype of :obj:`like`."""
        w = like.new_zeros(self.out_channels)
        w[self.pad_front: self.pad_front + self.in_channels] = 1.0
        return w


Rule = Callable[[nn.Module], ChannelSelect]
_LEAVES: dict[type, Rule] = {}


def register_leaf(module_type: type, rule: Rule) -> None:
    """Make :obj:`module_type` (and its subclasses) a leaf the converters understand, described by
    ``rule(module) -> ChannelSelect``. Registering a type again replaces its rule."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register_leaf needs a torch.nn.Module subclass, got {module_type!r}")
    if not callable(rule):
        raise TypeError(f"register_leaf needs a callable rule for {module_type.__name__}, got {rule!r}")
    _LEAVES[module_type] = rule


def leaf_types() -> tuple[type, ...]:
    """The registered leaf module types."""
    return tuple(_LEAVES)


def leaf_rule(module: object) -> ChannelSelect | None:
    """The :class:`ChannelSelect` describing :obj:`module`, or :obj:`None` if its type (or a base) is not
    registered."""
    for t in type(module).__mro__:
        if t in _LEAVES:
            return _LEAVES[t](module)
    return None
