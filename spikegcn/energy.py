r"""Energy (Eq. 6, docs/method.md, section 10) and latency (docs/method.md, section 9) models.

.. math::
    \frac{E_{ANN}}{E_{SNN}} = \frac{\sum_l \#MAC_l \, E_{MAC}}{\sum_l \#ADD_l \, E_{ADD}}

``#ADD_l`` is counted two ways: exactly, as spikes x fan-out of every pre-synaptic spike, and with the paper's
approximation :math:`s_l \cdot \#MAC_l` (:math:`s_l` = spikes per pre-synaptic neuron). The first layer counts
its input spikes as additions. Not counted, on either side: neuron updates (the x Q per phase and threshold
compares), BN/ReLU/pooling, and memory traffic.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .coding import _check_int

__all__ = ["EnergyCosts", "FP32", "INT8", "INT8_MULT_ONLY", "LayerStats", "energy_report", "latency"]


@dataclass(frozen=True)
class EnergyCosts:
    """Energy per operation in pJ (Horowitz, ISSCC 2014, 45 nm)."""

    e_mac: float
    e_add: float
    name: str = "custom"

    def __post_init__(self):
        if not (self.e_mac > 0 and self.e_add > 0):
            raise ValueError(f"energy costs must be positive, got e_mac={self.e_mac}, e_add={self.e_add}")


FP32 = EnergyCosts(4.6, 0.9, "FP32")
INT8 = EnergyCosts(0.23, 0.03, "INT8")
# the convention of four Table VI rows (docs/method.md, A13)
INT8_MULT_ONLY = EnergyCosts(0.2, 0.03, "INT8 (E_MAC = mult only)")


@dataclass
class LayerStats:
    """Operation and spike counts of one SNN layer and the ANN layer it replaces.

    Attributes:
        name: layer name.
        macs: ANN multiply-accumulates of the layer.
        in_neurons: pre-synaptic neurons (elements of the layer's input).
        in_spikes: spikes those neurons sent during the window.
        additions: exact SNN additions, sum over pre-synaptic spikes of their fan-out.
        out_neurons / out_spikes: the layer's own neurons and spikes (0 for an output layer).
        saturated_neurons: the layer's neurons whose potential exceeded lambda (clipped to phase 1, i.e. to
            lambda); ``None`` where it is not measured (output layers, and the compiled exact-mode kernels, which
            never form the full potential). :attr:`saturated` is the fraction of ``out_neurons``.
    """

    name: str
    macs: float
    in_neurons: int
    in_spikes: float
    additions: float
    out_neurons: int = 0
    out_spikes: float = 0.0
    kind: str = ""
    saturated_neurons: float | None = None

    @property
    def saturated(self) -> float | None:
        """Fraction of the layer's neurons that saturated (``None`` if not measured)."""
        if self.saturated_neurons is None:
            return None
        return self.saturated_neurons / self.out_neurons if self.out_neurons else 0.0

    @property
    def s(self) -> float:
        """Spikes per pre-synaptic neuron (the paper's s_l)."""
        return self.in_spikes / self.in_neurons if self.in_neurons else 0.0

    @property
    def approx_additions(self) -> float:
        return self.s * self.macs

    @property
    def spikes_per_neuron(self) -> float:
        return self.out_spikes / self.out_neurons if self.out_neurons else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(s=self.s, approx_additions=self.approx_additions, spikes_per_neuron=self.spikes_per_neuron,
                 saturated=self.saturated)
        return d


def energy_report(layers: list[LayerStats], costs: EnergyCosts = FP32) -> dict:
    """Energy of the ANN and the SNN, and their ratio, exact and approximate, with a per-layer breakdown."""
    macs = sum(l.macs for l in layers)
    adds = sum(l.additions for l in layers)
    approx = sum(l.approx_additions for l in layers)
    e_ann = macs * costs.e_mac
    e_snn = adds * costs.e_add
    e_snn_approx = approx * costs.e_add
    return {
        "costs": asdict(costs),
        "macs": macs,
        "additions": adds,
        "approx_additions": approx,
        "energy_ann_pj": e_ann,
        "energy_snn_pj": e_snn,
        "energy_snn_approx_pj": e_snn_approx,
        "ratio": e_ann / e_snn if e_snn else float("inf"),
        "ratio_approx": e_ann / e_snn_approx if e_snn_approx else float("inf"),
        "layers": [
            dict(l.as_dict(), ratio=(l.macs * costs.e_mac) / (l.additions * costs.e_add) if l.additions else None)
            for l in layers
        ],
        "not_counted": "neuron updates (xQ per phase, threshold compares), BN/ReLU/pooling, memory traffic",
    }


def latency(T: int, Tw: int, L: int, N: int = 1, double_buffer: bool = True) -> int:
    r"""Phases until the last of ``N`` inputs is classified by an ``L``-layer one-spike SNN.

    Layer ``l`` starts emitting ``Tw`` phases after layer ``l-1``; the output layer integrates until its input
    window ends, so one input takes :math:`(L-1) T_w + T`. Pipelined inputs are issued every ``T`` phases when
    every neuron can integrate the next input while its current window is open (two membrane registers):
    :math:`N T + (L-1) T_w`, i.e. ``T`` per input as ``N`` grows (the spec's :math:`N T + L T_w` bounds it).
    Without double buffering a neuron is busy for ``Tw + T`` phases per input, so inputs are issued every
    ``T + Tw`` phases: :math:`(N-1)(T+T_w) + (L-1)T_w + T`.
    """
    T = _check_int("T", T, 1)
    Tw = _check_int("Tw", Tw, 0)
    L = _check_int("L", L, 1)
    N = _check_int("N", N, 1)
    period = T if double_buffer else T + Tw
    return (N - 1) * period + (L - 1) * Tw + T
