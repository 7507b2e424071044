r"""CNNs for the vision experiments: CIFAR ResNet-20/32/44/56, a small VGG-style net and LeNet-5.

All models are written for conversion through :mod:`torch.fx`:

* every non-linearity is its own :class:`torch.nn.ReLU` instance (one per use, never shared, never
  ``inplace``), so that an observer hook on a module sees exactly one activation;
* pooling, flattening and the residual shortcut are modules (:class:`~torch.nn.MaxPool2d`,
  :class:`~torch.nn.AdaptiveAvgPool2d`, :class:`~torch.nn.Flatten`, :class:`OptionAShortcut`), not
  functional calls or lambdas;
* the residual join is written ``out = out + self.shortcut(x)`` followed by ``self.relu2(out)``.

:func:`symbolic_trace` traces a model keeping :class:`OptionAShortcut` as a leaf (a single ``call_module``
node), which is what a converter wants to recognise; plain :func:`torch.fx.symbolic_trace` also works and
traces through it into a slice and a pad.

The CIFAR ResNets follow He et al. (2016, Sec. 4.2) with option-A shortcuts as in the public checkpoints of
``akamaster/pytorch_resnet_cifar10`` (BSD-2-Clause), whose state dicts load into them with
``strict=True`` (the ``module.`` prefix of those files is stripped by :func:`load_pretrained`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..datafiles import DataFileError, fetch, verify
from ..fileio import load_torch
from ..nn.leaves import ChannelSelect, register_leaf

__all__ = [
    "OptionAShortcut",
    "BasicBlock",
    "CifarResNet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "VGG",
    "VGG_CONFIGS",
    "vgg_cifar",
    "LeNet5",
    "lenet5",
    "MODELS",
    "get_model",
    "PRETRAINED",
    "pretrained_path",
    "load_pretrained",
    "VisionTracer",
    "symbolic_trace",
]


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR ResNet (He et al. 2016, CIFAR variant)
# ---------------------------------------------------------------------------------------------------------------------
class OptionAShortcut(nn.Module):
    r"""Parameter-free ("option A") residual shortcut.

    Subsamples the input spatially with stride :obj:`stride` (``x[:, :, ::s, ::s]``) and zero-pads the channel
    dimension from :obj:`in_channels` to :obj:`out_channels`, the padding split as evenly as possible between
    front and back (``(out - in) // 2`` in front), which for the CIFAR ResNets is ``planes // 4`` on each side.

    For spiking conversion this is a fixed selection: output channel
    ``pad_front + c`` carries input channel ``c``, all other output channels are identically zero.

    Args:
        in_channels (int): channels of the block input.
        out_channels (int): channels of the block output (``>= in_channels``).
        stride (int, optional): spatial subsampling factor. (default: :obj:`2`)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: Tensor) -> Tensor:
        s = self.stride
        x = x[:, :, ::s, ::s]
        # F.pad pads the last dimensions first: (W_left, W_right, H_top, H_bottom, C_front, C_back).
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


# The converters know this module as a channel selection (the core does not import this file).
register_leaf(OptionAShortcut, lambda m: ChannelSelect(m.in_channels, m.out_channels, m.stride))


class BasicBlock(nn.Module):
    r"""ResNet basic block ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Args:
        in_planes (int): input channels.
        planes (int): output channels.
        stride (int, optional): stride of :obj:`conv1` (and of the shortcut). (default: :obj:`1`)
        option (str, optional): shortcut used when the shape changes: :obj:`"A"` (parameter-free
            :class:`OptionAShortcut`) or :obj:`"B"` (1x1 convolution + batch norm). (default: :obj:`"A"`)
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, option: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif option == "A":
            self.shortcut = OptionAShortcut(in_planes, planes, stride)
        elif option == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            raise ValueError(f"unknown shortcut option {option!r} (expected 'A' or 'B')")

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu2(out)


class CifarResNet(nn.Module):
    r"""CIFAR ResNet of depth :math:`6n + 2` (He et al. 2016, Sec. 4.2).

    ``conv3x3(16) - bn - relu``, three stages of :obj:`n` :class:`BasicBlock` with 16, 32, 64 channels
    (stride 2 at the start of stages 2 and 3), global average pooling and a linear classifier. Module names
    (``conv1``, ``bn1``, ``layer1..3``, ``linear``) match the public checkpoints.

    Args:
        num_blocks (Sequence[int]): blocks per stage, e.g. ``(3, 3, 3)`` for ResNet-20.
        num_classes (int, optional): output classes. (default: :obj:`10`)
        in_channels (int, optional): input channels. (default: :obj:`3`)
        option (str, optional): shortcut type, see :class:`BasicBlock`. (default: :obj:`"A"`)
        width (int, optional): channels of the first stage. (default: :obj:`16`)
    """

    def __init__(
        self,
        num_blocks: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        option: str = "A",
        width: int = 16,
    ) -> None:
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(width, num_blocks[0], 1, option)
        self.layer2 = self._make_layer(2 * width, num_blocks[1], 2, option)
        self.layer3 = self._make_layer(4 * width, num_blocks[2], 2, option)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(4 * width, num_classes)
        self.reset_parameters()

    def _make_layer(self, planes: int, blocks: int, stride: int, option: str) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s, option))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        # Kaiming-normal conv/linear weights as in the reference implementation; BN at (1, 0).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = self.flatten(self.avgpool(out))
        return self.linear(out)


def _resnet(depth: int, **kwargs) -> CifarResNet:
    if (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), **kwargs)


def resnet20(**kwargs) -> CifarResNet:
    """ResNet-20 (0.27M parameters). Keyword arguments go to :class:`CifarResNet`."""
    return _resnet(20, **kwargs)


def resnet32(**kwargs) -> CifarResNet:
    """ResNet-32 (0.46M parameters). Keyword arguments go to :class:`CifarResNet`."""
    return _resnet(32, **kwargs)


def resnet44(**kwargs) -> CifarResNet:
    """ResNet-44 (0.66M parameters). Keyword arguments go to :class:`CifarResNet`."""
    return _resnet(44, **kwargs)


def resnet56(**kwargs) -> CifarResNet:
    """ResNet-56 (0.85M parameters). Keyword arguments go to :class:`CifarResNet`."""
    return _resnet(56, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# VGG-style CIFAR net (max pooling)
# ---------------------------------------------------------------------------------------------------------------------
CfgItem = Union[int, str]

#: Feature configurations: an int is a 3x3 conv-BN-ReLU with that many channels, ``"M"`` a 2x2 max pool.
VGG_CONFIGS: dict[str, tuple[CfgItem, ...]] = {
    # 0.39M parameters, 22M MACs per 32x32 image (ResNet-20: 41M).
    "small": (32, "M", 64, "M", 128, 128, "M", 128, "M"),
    # 0.44M parameters, 41M MACs.
    "medium": (32, 32, "M", 64, 64, "M", 128, 128, "M", 128, "M"),
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(nn.Module):
    r"""VGG-style network: ``features`` (3x3 conv-BN-ReLU blocks and 2x2 max pools), then
    ``classifier`` (:class:`~torch.nn.Flatten`, optional hidden linear-ReLU layers, a final linear layer).

    Args:
        cfg (Sequence[int | str]): feature configuration, see :data:`VGG_CONFIGS`.
        num_classes (int, optional): output classes. (default: :obj:`10`)
        in_channels (int, optional): input channels. (default: :obj:`3`)
        in_size (int, optional): input height = width, used to size the first linear layer. (default: :obj:`32`)
        batch_norm (bool, optional): add :class:`~torch.nn.BatchNorm2d` after every conv (then convs have no
            bias). (default: :obj:`True`)
        hidden (Sequence[int], optional): widths of hidden linear layers. (default: :obj:`()`)
    """

    def __init__(
        self,
        cfg: Sequence[CfgItem],
        num_classes: int = 10,
        in_channels: int = 3,
        in_size: int = 32,
        batch_norm: bool = True,
        hidden: Sequence[int] = (),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, in_size
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
            else:
                out = int(item)
                layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU())
                c = out
        if size < 1:
            raise ValueError(f"too many pooling stages for a {in_size}x{in_size} input")
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten(1)]
        f = c * size * size
        for h in hidden:
            head += [nn.Linear(f, h), nn.ReLU()]
            f = h
        head.append(nn.Linear(f, num_classes))
        self.classifier = nn.Sequential(*head)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def vgg_cifar(
    cfg: Union[str, Sequence[CfgItem]] = "small",
    num_classes: int = 10,
    in_channels: int = 3,
    in_size: int = 32,
    batch_norm: bool = True,
    hidden: Sequence[int] = (),
) -> VGG:
    r"""A VGG-style CIFAR network with max pooling.

    The default ``"small"`` configuration reaches 82.6 % on the CIFAR-10 JPEG test set after 12 epochs (SGD
    momentum 0.9, lr 0.05 cosine, weight decay 5e-4, batch 128, crop-and-flip; about 1 min per epoch on 2 cores).

    Args:
        cfg (str or Sequence[int | str], optional): a name in :data:`VGG_CONFIGS` (``"small"``, ``"medium"``,
            ``"vgg11"``, ``"vgg16"``) or an explicit configuration. (default: :obj:`"small"`)
        num_classes, in_channels, in_size, batch_norm, hidden: see :class:`VGG`.
    """
    if isinstance(cfg, str):
        if cfg not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG config {cfg!r}; choose from {sorted(VGG_CONFIGS)} or pass a list")
        cfg = VGG_CONFIGS[cfg]
    return VGG(cfg, num_classes, in_channels, in_size, batch_norm, hidden)


# ---------------------------------------------------------------------------------------------------------------------
# LeNet-5
# ---------------------------------------------------------------------------------------------------------------------
class LeNet5(nn.Module):
    r"""LeNet-5 with ReLU and max pooling: ``(conv-relu-maxpool) x 2 - flatten - fc(120) - fc(84) - fc(classes)``.

    For 28x28 inputs (MNIST) the convs are 5x5 (the first padded by 2, the classic 32x32 receptive field), giving
    ``16 x 5 x 5`` features. For small inputs (``in_size < 28``, e.g. 8x8 sklearn digits) both convs are 3x3 with
    padding 1, giving ``16 x (in_size // 4)^2`` features.

    Args:
        in_channels (int, optional): input channels. (default: :obj:`1`)
        num_classes (int, optional): output classes. (default: :obj:`10`)
        in_size (int, optional): input height = width. (default: :obj:`28`)
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, in_size: int = 28) -> None:
        super().__init__()
        if in_size >= 28:
            k1, p1, k2, p2 = 5, 2, 5, 0
        else:
            k1, p1, k2, p2 = 3, 1, 3, 1
        s = (in_size + 2 * p1 - k1 + 1) // 2
        s = (s + 2 * p2 - k2 + 1) // 2
        if s < 1:
            raise ValueError(f"input size {in_size} is too small for LeNet-5")
        self.conv1 = nn.Conv2d(in_channels, 6, k1, padding=p1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, k2, padding=p2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(16 * s * s, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(self.flatten(x)))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)


def lenet5(in_channels: int = 1, num_classes: int = 10, in_size: int = 28) -> LeNet5:
    """LeNet-5 for MNIST (``in_size=28``) or 8x8 sklearn digits (``in_size=8``); see :class:`LeNet5`."""
    return LeNet5(in_channels, num_classes, in_size)


# ---------------------------------------------------------------------------------------------------------------------
# Registry and pretrained weights
# ---------------------------------------------------------------------------------------------------------------------
MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "vgg_cifar": vgg_cifar,
    "lenet5": lenet5,
}


def get_model(name: str, **kwargs) -> nn.Module:
    r"""Build an untrained model by name (a key of :data:`MODELS`); keyword arguments go to its constructor."""
    try:
        return MODELS[name.lower()](**kwargs)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}") from None


_WEIGHTS_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{}"

#: Pretrained CIFAR-10 checkpoints: model name -> (file name, sha256). Recipe: ``datasets/weights/SHA256SUMS``.
PRETRAINED: dict[str, tuple[str, str]] = {
    "resnet20": ("resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
    "resnet32": ("resnet32-d509ac18.th", "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850"),
    "resnet44": ("resnet44-014dd654.th", "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4"),
    "resnet56": ("resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
}


def pretrained_path(name: str) -> Path:
    r"""Locate (and verify) the pretrained checkpoint of :obj:`name`.

    Resolution order: ``$SPIKEGCN_WEIGHTS/<file>`` (the Makefile sets it to a ``weights`` folder shipped beside the
    checkout, when there is one), then ``$SPIKEGCN_DATA/weights/<file>`` and ``cache_dir()/weights/<file>`` through
    :func:`spikegcn.datafiles.fetch`, which downloads the file from the public release of
    ``akamaster/pytorch_resnet_cifar10`` when it is nowhere. Every copy is checked against its sha256.

    Raises:
        DataFileError: when the file is corrupted, or missing and cannot be downloaded.
    """
    key = name.lower()
    if key not in PRETRAINED:
        raise ValueError(f"no pretrained weights for {name!r}; available: {sorted(PRETRAINED)}")
    fname, sha = PRETRAINED[key]
    env = os.environ.get("SPIKEGCN_WEIGHTS")
    if env:
        cand = Path(env).expanduser() / fname
        if cand.is_file():
            return verify(cand, sha)
    try:
        return fetch(f"weights/{fname}", sha, _WEIGHTS_URL.format(fname), what="pretrained weights")
    except DataFileError as exc:
        raise DataFileError(f"{exc} Alternatively set SPIKEGCN_WEIGHTS to a folder holding '{fname}'.") from exc


def load_pretrained(name: str, path: Union[str, os.PathLike, None] = None) -> nn.Module:
    r"""Build :obj:`name` and load its pretrained CIFAR-10 weights (``strict=True``); returned in eval mode.

    The checkpoints expect inputs normalised with mean ``(0.485, 0.456, 0.406)`` and std
    ``(0.229, 0.224, 0.225)`` (see :data:`spikegcn.vision.data.CIFAR_MEAN`).

    Args:
        name (str): ``"resnet20"``, ``"resnet32"``, ``"resnet44"`` or ``"resnet56"``.
        path (str or PathLike, optional): an explicit checkpoint file (not checksum-verified: it may be a
            fine-tuned checkpoint saved by :func:`spikegcn.experiments.cnn_train.finetune`). By default the published
            file located by :func:`pretrained_path`. (default: :obj:`None`)
    """
    model = get_model(name)
    ckpt_path = Path(path) if path is not None else pretrained_path(name)
    # weights_only=True: the files hold tensors plus plain numbers, no pickled code is needed.
    ckpt = load_torch(ckpt_path, "weights file")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------------
# torch.fx
# ---------------------------------------------------------------------------------------------------------------------
class VisionTracer(torch.fx.Tracer):
    r""":class:`torch.fx.Tracer` that keeps :class:`OptionAShortcut` (and the built-in :mod:`torch.nn` layers)
    as leaf ``call_module`` nodes, so that a converter can map each to a spiking layer."""

    leaf_types: tuple[type, ...] = (OptionAShortcut,)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, module_qualified_name)


def symbolic_trace(model: nn.Module) -> torch.fx.GraphModule:
    """Trace :obj:`model` with :class:`VisionTracer` into a :class:`torch.fx.GraphModule`."""
    tracer = VisionTracer()
    graph = tracer.trace(model)
    return torch.fx.GraphModule(model, graph, model.__class__.__name__)
