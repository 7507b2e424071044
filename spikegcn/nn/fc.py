r"""The fully-connected head layer of a one-spike CNN and the flatten before it (the neuron core is
:class:`~spikegcn.nn.conv.OneSpikeLayer`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..coding import PhaseCode
from ..kernels import conv_cpu
from ..spikes import BinarySpikes, PhaseSpikes
from .base import set_scale
from .conv import CNNSpikes, OneSpikeLayer, _window_counts, fold_batchnorm

__all__ = ["SpikingFC", "SpikingFlatten"]


# ------------------------------------------------------------------------------------------------ fully connected
class SpikingFC(OneSpikeLayer):
    r"""One-spike neurons after a fully-connected layer of a CNN head (layer-wise :math:`\lambda`).

    .. math::
        \hat a^l_j = \mathrm{Enc}\Big(\tilde b_j + \sum_f \tilde W_{jf}\, [\mathrm{pool}(\hat a^{l-1})]_f\Big),
        \qquad \tilde W_{jf} = W_{jf}\,\lambda^{l-1}_{c(f)} / \lambda^l

    The input may be a feature map (it is flattened; :math:`\lambda^{l-1}_{c(f)}` is the scale of the channel
    feature :math:`f` came from). An average pool between the feature map and this layer can be folded in
    (``pool``, docs/method.md, A8 option): it is linear, so the layer reads the un-pooled spikes, each with fan-out
    (windows covering it) x ``out_features``, and no extra neuron layer or wait is needed.

    Args:
        in_features (int): input features (after pooling and flattening).
        out_features (int): output features.
        bias (bool): bias.
        pool (dict, optional): keyword arguments of :func:`torch.nn.functional.avg_pool2d` (``kernel_size``,
            ``stride``, ``padding``, ``ceil_mode``, ``count_include_pad``, ``divisor_override``) of a folded
            average pool.
        code, mode, output: see :class:`OneSpikeLayer`.
    """

    kind = "linear"
    out_ndim = 2

    def __init__(self, in_features: int, out_features: int, bias: bool = True, pool: dict | None = None,
                 code: PhaseCode | None = None, mode: str = "exact", output: str = "spikes"):
        super().__init__()
        self._init_layer(out_features, code, mode, output)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.pool = dict(pool) if pool is not None else None
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        self.scale.fill_(1.0)
        self.weight_bits = None

    @classmethod
    def from_linear(cls, lin: nn.Linear, in_scale: Tensor | float = 1.0, scale: Tensor | float = 1.0,
                    bn: nn.BatchNorm1d | None = None, **kwargs) -> "SpikingFC":
        """From a trained :class:`torch.nn.Linear`; ``in_scale`` per input feature (or scalar), ``scale`` the
        layer-wise output :math:`\\lambda` (1 for an output layer)."""
        w, b = fold_batchnorm(lin.weight, lin.bias, bn)
        layer = cls(lin.in_features, lin.out_features, bias=(lin.bias is not None or bn is not None), **kwargs)
        layer.load_normalized_(w, b, in_scale, scale)
        return layer

    @torch.no_grad()
    def load_normalized_(self, weight: Tensor, bias: Tensor | None, in_scale: Tensor | float,
                         scale: Tensor | float) -> "SpikingFC":
        lam_in = torch.as_tensor(in_scale, dtype=torch.float64, device=weight.device).expand(self.in_features)
        lam_out = set_scale(self.scale, scale)
        self.weight.copy_(weight.double() * lam_in[None, :] / lam_out[:, None])
        if self.bias is not None:
            self.bias.copy_((lam_out.new_zeros(self.out_features) if bias is None else bias.double()) / lam_out)
        return self

    def _prepare(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = F.avg_pool2d(x, **self.pool)
        return x.flatten(1) if x.dim() > 2 else x

    def synapse(self, i: int, x: Tensor) -> Tensor:
        return F.linear(self._prepare(x), self.weight)

    def conv_form(self, i: int) -> conv_cpu.ConvForm | None:
        if self.pool is not None:
            return None
        return self.weight.detach().t()[None, None], (1, 1), (0, 0), (1, 1)  # a 1 x 1 conv on a 1 x 1 map

    def fanout(self, i: int, in_shape: torch.Size) -> Tensor:
        if self.pool is None:
            return torch.tensor(float(self.out_features), device=self.weight.device)
        hw = tuple(in_shape[-2:])
        pool = {**self.pool, "divisor_override": 1}  # window sums: d(sum)/dx = windows covering x
        return self._cached_fanout(hw, lambda: _window_counts(hw, lambda x: F.avg_pool2d(x, **pool),
                                                              self.weight.device) * self.out_features)

    def macs(self, i: int, in_shape: torch.Size) -> float:
        # the pooling itself is not counted (docs/method.md, section 10)
        return float(self.in_features * self.out_features)

    def weight_tensors(self) -> list[Tensor]:
        return [self.weight]

    def __repr__(self) -> str:
        p = f", pool={self.pool}" if self.pool else ""
        return f"{self.__class__.__name__}({self.in_features}, {self.out_features}{p}, {self._layer_repr()})"


# ------------------------------------------------------------------------------------------------ flatten
class SpikingFlatten(nn.Module):
    r"""Flatten spikes from dimension ``start_dim`` on (``[N, C, H, W] -> [N, C H W]``): a relabelling of
    neurons, no computation; the per-channel :math:`\lambda` becomes per feature."""

    def __init__(self, start_dim: int = 1):
        super().__init__()
        if start_dim != 1:
            raise ValueError(f"only flattening from dimension 1 is supported, got start_dim={start_dim}")
        self.start_dim = start_dim

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: CNNSpikes) -> CNNSpikes:
        data = x.phase if isinstance(x, PhaseSpikes) else x.bits
        scale = x.scale
        if scale.dim():
            scale = scale.expand(data.shape[1:]).reshape(-1)
        sign = x.sign.flatten(1) if x.sign is not None else None
        if isinstance(x, PhaseSpikes):
            return PhaseSpikes(phase=data.flatten(1), code=x.code, scale=scale, sign=sign, start=x.start)
        return BinarySpikes(bits=data.flatten(1), T=x.T, scale=scale, sign=sign, start=x.start)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(start_dim={self.start_dim})"
