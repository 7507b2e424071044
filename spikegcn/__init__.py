"""spikegcn: convert trained ReLU GCNs and CNNs into one-spike SNNs (single-spike phase coding)."""
from .coding import PhaseCode, best_base, decode, encode, encode_binary, mape, quantize
from .energy import FP32, INT8, EnergyCosts, LayerStats, energy_report, latency
from .neuron import membrane_reference, multi_spike_fire, one_spike_fire
from .spikes import BinarySpikes, PhaseSpikes

__version__ = "0.1.0"

__all__ = [
    "PhaseCode",
    "encode",
    "decode",
    "quantize",
    "encode_binary",
    "mape",
    "best_base",
    "one_spike_fire",
    "membrane_reference",
    "multi_spike_fire",
    "PhaseSpikes",
    "BinarySpikes",
    "EnergyCosts",
    "FP32",
    "INT8",
    "LayerStats",
    "energy_report",
    "latency",
]

from .convert import SpikingModel, UnsupportedModuleError, convert  # noqa: E402
from .nn import PhaseEncoder, SpikingAggregation, SpikingGCNConv, SpikingLinear  # noqa: E402

__all__ += ["convert", "SpikingModel", "UnsupportedModuleError", "PhaseEncoder", "SpikingLinear",
            "SpikingAggregation", "SpikingGCNConv"]
