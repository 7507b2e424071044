"""Event kernels shared by all spiking layers."""
from .scatter import HAS_TORCH_SCATTER, DenseSynapses, GraphSynapses, accumulate_events, scatter_backend, scatter_sum

__all__ = ["HAS_TORCH_SCATTER", "DenseSynapses", "GraphSynapses", "accumulate_events", "scatter_backend", "scatter_sum"]
