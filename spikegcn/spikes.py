"""Spike containers passed between spiking layers.

A one-spike layer's output is its fire phases (small integers, 0 = silent), an optional sign for signed neurons,
the per-channel scale lambda (ANN units of a phase-1 spike), the code and the global phase at which its window
starts. Storing phases, not T float planes, keeps memory at O(neurons).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import torch
from torch import Tensor

from .coding import _FAST_MIN, PhaseCode, _decode_fast, binary_spike_count, decode, decode_binary

__all__ = ["PhaseSpikes", "BinarySpikes", "IdentitySpikes", "SparsePhaseSpikes", "SpikeInput"]


def _events(mask: Tensor, value: float, sign: Tensor | None, scale: Tensor, dtype: torch.dtype):
    """``(row, col, value)`` of the 2-D spikes in ``mask`` that all carry ``value`` (x sign x channel scale)."""
    row, col = mask.nonzero(as_tuple=True)
    val = torch.full((row.numel(),), value, dtype=dtype, device=row.device)
    if sign is not None:
        val = val * sign[row, col].to(dtype)
    sc = scale.to(dtype=dtype, device=row.device)
    return row, col, val * (sc.expand(mask.shape[-1]).index_select(0, col) if sc.dim() else sc)


@dataclass
class PhaseSpikes:
    r"""Output of a layer of one-spike neurons.

    The transmitted value of neuron ``i`` in channel ``k`` is
    :math:`\mathrm{sign}_i \cdot \lambda_k \cdot Q^{-(\mathrm{phase}_i - 1)}` (0 when ``phase_i == 0``).

    Attributes:
        phase: fire phases ``0..T`` (int8/int16), channels in the last dimension.
        code: the code the layer emitted with.
        scale: lambda per channel (shape ``[C]``) or a scalar tensor, in ANN units.
        sign: int8 -1/0/+1 for signed neurons, else ``None``.
        start: global phase at which this window starts (layer index x Tw).
    """

    phase: Tensor
    code: PhaseCode
    scale: Tensor = field(default_factory=lambda: torch.tensor(1.0))
    sign: Tensor | None = None
    start: int = 0
    # the normalised values, when the producing layer decoded them in its firing pass (a CNN layer in closed
    # form), with what they were decoded from: replacing phase, sign or code, or changing any of the three tensors
    # in place (their version counters), voids them. They live as long as this object (float32: 4x the phases).
    _decoded: tuple | None = field(default=None, init=False, repr=False, compare=False)
    # the spikes per position ([N, C, *positions] phases summed over N and C) counted by the producing pass, with
    # their version and the phase tensor and version they were counted from
    _counts: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def _inference(self, values: Tensor) -> bool:
        return any(t is not None and t.is_inference() for t in (self.phase, self.sign, values))

    def _decoded_key(self) -> tuple:
        sign = self.sign
        return (self.phase, self.phase._version, sign, -1 if sign is None else sign._version, self.code)

    def keep_decoded(self, values: Tensor) -> "PhaseSpikes":
        """Remember ``values`` as :meth:`normalized`'s result (the caller guarantees it is), for the next layer.
        Not under ``torch.inference_mode`` (its tensors keep no version counter to guard the values with)."""
        if not self._inference(values):
            self._decoded = (values, values._version, self._decoded_key())
        return self

    def kept_decoded(self, dtype: torch.dtype) -> Tensor | None:
        """The values of :meth:`keep_decoded` if they are of ``dtype`` and nothing they came from has changed since;
        shared, not copied: the caller must not change them."""
        d = self._decoded
        if d is None or d[0].dtype != dtype or self._inference(d[0]) or d[0]._version != d[1]:
            return None
        key, now = d[2], self._decoded_key()
        same = key[0] is now[0] and key[2] is now[2] and key[1] == now[1] and key[3] == now[3] and key[4] == now[4]
        return d[0] if same else None

    def keep_position_counts(self, counts: Tensor) -> "PhaseSpikes":
        """Remember the spikes per position (``phase != 0`` summed over the first two dimensions) that the caller
        counted; replacing or changing the phases voids them (not kept under ``torch.inference_mode``)."""
        if not (self.phase.is_inference() or counts.is_inference()):
            self._counts = (counts, counts._version, self.phase, self.phase._version)
        return self

    def kept_position_counts(self) -> Tensor | None:
        """The counts of :meth:`keep_position_counts` if the phases are still the ones counted, else ``None``."""
        c = self._counts
        if (c is None or c[2] is not self.phase or self.phase.is_inference() or c[3] != self.phase._version
                or c[0]._version != c[1]):
            return None
        return c[0]

    def normalized(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Decoded values in normalised units (without lambda)."""
        kept = self.kept_decoded(dtype)
        return kept.clone() if kept is not None else decode(self.phase, self.code, self.sign, dtype=dtype)

    def values(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Decoded values in ANN units."""
        if dtype == torch.float32 and self.phase.numel() >= _FAST_MIN:
            v = _decode_fast(self.phase, self.code, self.sign, self.scale)  # one pass, scale fused
            if v is not None:
                return v
        return self.normalized(dtype) * self.scale.to(dtype)

    def num_spikes(self) -> int:
        return int(torch.count_nonzero(self.phase))

    def spikes_per_neuron(self) -> float:
        return self.num_spikes() / max(1, self.phase.numel())

    def phase_histogram(self) -> Tensor:
        """Spike count per phase 1..T (index 0 = silent neurons)."""
        return torch.bincount(self.phase.reshape(-1).long(), minlength=self.code.T + 1)

    @property
    def shape(self) -> torch.Size:
        return self.phase.shape

    @property
    def T_in(self) -> int:
        return self.code.T

    def spike_counts(self) -> Tensor:
        return (self.phase != 0).to(torch.int64)

    def values_upto(self, k: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Values (ANN units) of the spikes fired at phases ``<= k``; later neurons read as 0."""
        v = self.values(dtype)
        if k >= self.code.T:
            return v
        return v * (self.phase <= k)

    def events_at(self, p: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        """``(row, col, value)`` of the spikes fired at phase ``p`` (2-D spikes: node x channel)."""
        return _events(self.phase == p, self.code.Q ** -(p - 1), self.sign, self.scale, dtype)


@dataclass
class BinarySpikes:
    r"""Binary multi-spike input: packed T-bit codes, base 2, spike at phase t worth :math:`2^{-t}`.

    Value in ANN units: :math:`\mathrm{sign}\cdot\lambda^0 \sum_t b_t 2^{-t}`.
    """

    bits: Tensor
    T: int
    scale: Tensor = field(default_factory=lambda: torch.tensor(1.0))
    sign: Tensor | None = None
    start: int = 0

    def normalized(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return decode_binary(self.bits, self.T, self.sign, dtype=dtype)

    def values(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return self.normalized(dtype) * self.scale.to(dtype)

    def spike_counts(self) -> Tensor:
        return binary_spike_count(self.bits, self.T)

    def num_spikes(self) -> int:
        return int(self.spike_counts().sum())

    def spikes_per_neuron(self) -> float:
        return self.num_spikes() / max(1, self.bits.numel())

    @property
    def shape(self) -> torch.Size:
        return self.bits.shape

    @property
    def T_in(self) -> int:
        return self.T

    def values_upto(self, k: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Values (ANN units) of the bits sent at phases ``<= k`` (the top ``k`` bits)."""
        if k >= self.T:
            return self.values(dtype)
        drop = self.T - k
        bits = (self.bits >> drop) << drop
        return decode_binary(bits, self.T, self.sign, dtype=dtype).mul_(self.scale.to(dtype))  # a fresh tensor

    def events_at(self, p: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        return _events(((self.bits >> (self.T - p)) & 1).bool(), 2.0**-p, self.sign, self.scale, dtype)


@dataclass
class IdentitySpikes:
    """Featureless input ``X = I`` (Text GCN): node ``n`` sends one spike, value 1, at phase 1 on feature ``n``."""

    num_nodes: int
    device: torch.device | str = "cpu"
    start: int = 0

    T_in = 1

    def spike_counts(self) -> Tensor:
        return torch.ones(self.num_nodes, dtype=torch.int64, device=self.device)

    def num_spikes(self) -> int:
        return self.num_nodes

    @property
    def shape(self) -> torch.Size:
        return torch.Size([self.num_nodes, self.num_nodes])


@dataclass
class SparsePhaseSpikes:
    """One-spike neurons that exist only on a sparse pattern (e.g. the non-zeros of A-hat I in the
    aggregation-first Text GCN): entry ``i`` is neuron ``(row[i], col[i])`` of an ``N x C`` layer, every other
    neuron never receives input and never fires. ``scale`` is per column ``[C]`` or a scalar."""

    row: Tensor
    col: Tensor
    phase: Tensor
    code: PhaseCode
    size: tuple[int, int]
    scale: Tensor = field(default_factory=lambda: torch.tensor(1.0))
    start: int = 0

    @property
    def T_in(self) -> int:
        return self.code.T

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.size)

    def _entry_values(self, dtype: torch.dtype) -> Tensor:
        v = decode(self.phase, self.code, dtype=dtype)
        sc = self.scale.to(dtype=dtype, device=v.device)
        return v * (sc.index_select(0, self.col) if sc.dim() else sc)

    def values_upto(self, k: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Sparse COO ``[N, C]`` tensor of the values sent at phases ``<= k``."""
        v = self._entry_values(dtype)
        if k < self.code.T:
            v = v * (self.phase <= k)
        return torch.sparse_coo_tensor(torch.stack([self.row, self.col]), v, self.size, is_coalesced=True,
                                       device=self.row.device)

    def events_at(self, p: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        sel = (self.phase == p).nonzero(as_tuple=True)[0]
        return self.row[sel], self.col[sel], self._entry_values(dtype)[sel]

    def spike_counts(self) -> Tensor:
        return (self.phase != 0).to(torch.int64)

    def num_spikes(self) -> int:
        return int(torch.count_nonzero(self.phase))

    def spikes_per_neuron(self) -> float:
        return self.num_spikes() / max(1, self.phase.numel())


SpikeInput = Union[PhaseSpikes, BinarySpikes, IdentitySpikes, SparsePhaseSpikes]
