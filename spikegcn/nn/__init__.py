"""Spiking layers to drop into PyG models (one layer a file)."""
from .aggregation import SpikingAggregation
from .appnp import SpikingAPPNP
from .cheb_conv import SpikingChebConv
from .conv import OneSpikeLayer, SpikingConv2d
from .encoder import PhaseEncoder
from .fc import SpikingFC, SpikingFlatten
from .gcn2_conv import SpikingGCN2Conv
from .gcn_conv import SpikingGCNConv
from .gin_conv import SpikingGINAggregation, SpikingGINConv
from .global_pool import SpikingGlobalPool
from .graph_conv import SpikingGraphConv
from .graph_layer import SpikingGraphLayer
from .join import SpikingConcat, SpikingJoin
from .linear import SpikingLinear
from .pool import SpikingAvgPool2d, SpikingMaxPool2d
from .residual import SpikingResidual
from .sage_conv import SpikingSAGEConv
from .sg_conv import SpikingSGConv
from .simple_conv import SpikingSimpleConv
from .tag_conv import SpikingTAGConv

__all__ = ["PhaseEncoder", "SpikingLinear", "SpikingAggregation", "SpikingGCNConv"]
__all__ += ["SpikingGraphLayer", "SpikingSAGEConv", "SpikingGraphConv", "SpikingSGConv", "SpikingChebConv",
            "SpikingTAGConv", "SpikingAPPNP", "SpikingGCN2Conv", "SpikingSimpleConv", "SpikingGINConv",
            "SpikingGINAggregation",
            "SpikingGlobalPool", "SpikingJoin", "SpikingConcat"]
__all__ += ["OneSpikeLayer", "SpikingConv2d", "SpikingFC", "SpikingFlatten", "SpikingMaxPool2d", "SpikingAvgPool2d",
            "SpikingResidual"]
