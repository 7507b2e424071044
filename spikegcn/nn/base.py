"""What every spiking layer shares: its code, mode, output kind, output scale and last statistics."""
from __future__ import annotations

import torch
from torch import Tensor

from ..coding import PhaseCode
from ..energy import LayerStats
from ..simulate import check_mode
from ..spikes import BinarySpikes, IdentitySpikes, PhaseSpikes, SparsePhaseSpikes


def as_spike_input(x, num_nodes: int | None = None):
    """Accept spikes, or a sparse identity / ``None`` for featureless input (X = I)."""
    if isinstance(x, (PhaseSpikes, BinarySpikes, IdentitySpikes, SparsePhaseSpikes)):
        return x
    if x is None:
        if num_nodes is None:
            raise ValueError("featureless input (x=None) needs the number of nodes")
        return IdentitySpikes(num_nodes)
    if isinstance(x, Tensor) and x.layout != torch.strided and _is_identity(x):
        return IdentitySpikes(x.shape[0], device=x.device)
    raise TypeError(
        f"spiking layers take spikes (PhaseSpikes/BinarySpikes, e.g. from PhaseEncoder) or a sparse identity "
        f"for featureless input, got {type(x).__name__}"
        + (f" with layout {x.layout}" if isinstance(x, Tensor) else "")
    )


def _is_identity(x: Tensor) -> bool:
    if x.dim() != 2 or x.shape[0] != x.shape[1]:
        return False
    x = x.coalesce() if x.layout == torch.sparse_coo else x.to_sparse_coo().coalesce()
    idx, val = x.indices(), x.values()
    n = x.shape[0]
    return idx.shape[1] == n and bool((idx[0] == idx[1]).all()) and bool((val == 1).all())


class SpikingMixin:
    """Configuration shared by spiking layers (mixed into ``nn.Module`` subclasses)."""

    code: PhaseCode
    mode: str
    output: str
    stats: list[LayerStats]

    def _init_spiking(self, code: PhaseCode, mode: str, output: str, backend: str = "auto") -> None:
        if not isinstance(code, PhaseCode):
            raise TypeError(f"code must be a PhaseCode, got {type(code).__name__}")
        self.code = code
        self.mode = check_mode(mode)
        if output not in ("spikes", "potential"):
            raise ValueError(f"output must be 'spikes' or 'potential', got {output!r}")
        self.output = output
        self.backend = backend
        self.stats = []

    def set_mode(self, mode: str):
        """``"functional"`` or ``"exact"`` from now on (a composite layer passes it on to its parts)."""
        self.mode = check_mode(mode)
        return self

    def _spiking_repr(self) -> str:
        return f"code={self.code}, mode={self.mode!r}, output={self.output!r}"


def set_scale(buf: Tensor, value: Tensor | float) -> Tensor:
    """Copy a calibrated lambda into a scale buffer; dead channels (lambda = 0, or 0 in the buffer's dtype) get 1
    (docs/method.md, section 2). Returns the stored lambda in float64, for normalising weights with it."""
    v = torch.as_tensor(value, dtype=torch.float64, device=buf.device).expand(buf.shape)
    v = torch.where(v.to(buf.dtype) > 0, v, torch.ones_like(v))
    buf.copy_(v.to(buf.dtype))
    return v
