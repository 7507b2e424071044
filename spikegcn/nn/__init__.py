"""Spiking layers to drop into PyG models (one layer a file)."""
from .aggregation import SpikingAggregation
from .conv import OneSpikeLayer, SpikingConv2d
from .encoder import PhaseEncoder
from .fc import SpikingFC, SpikingFlatten
from .gcn_conv import SpikingGCNConv
from .linear import SpikingLinear
from .pool import SpikingAvgPool2d, SpikingMaxPool2d
from .residual import SpikingResidual

__all__ = ["PhaseEncoder", "SpikingLinear", "SpikingAggregation", "SpikingGCNConv"]
__all__ += ["OneSpikeLayer", "SpikingConv2d", "SpikingFC", "SpikingFlatten", "SpikingMaxPool2d", "SpikingAvgPool2d",
            "SpikingResidual"]
