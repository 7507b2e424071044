"""spikegcn: convert trained ReLU GCNs and CNNs into one-spike SNNs (single-spike phase coding).

The names below are imported on first use (PEP 562), so ``import spikegcn`` and the ``spikegcn`` command's
``--help`` do not load torch or PyG.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    ".coding": ["PhaseCode", "encode", "decode", "quantize", "encode_binary", "mape", "best_base"],
    ".neuron": ["one_spike_fire", "membrane_reference", "multi_spike_fire"],
    ".spikes": ["PhaseSpikes", "BinarySpikes"],
    ".energy": ["EnergyCosts", "FP32", "INT8", "LayerStats", "energy_report", "latency"],
    ".conversion": ["convert", "prepare", "calibrate", "reconstruct", "SpikingModel", "UnsupportedModuleError"],
    ".nn": ["PhaseEncoder", "SpikingLinear", "SpikingAggregation", "SpikingGCNConv"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'spikegcn' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

