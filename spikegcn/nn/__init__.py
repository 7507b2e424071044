"""Spiking layers to drop into PyG models (one layer a file)."""
from .aggregation import SpikingAggregation
from .encoder import PhaseEncoder
from .gcn_conv import SpikingGCNConv
from .linear import SpikingLinear

__all__ = ["PhaseEncoder", "SpikingLinear", "SpikingAggregation", "SpikingGCNConv"]
