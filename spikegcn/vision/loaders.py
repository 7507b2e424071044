r"""Normalisation, augmentation and batching of image tensors, and the loaders of the vision datasets.

Augmentation (:func:`random_crop_flip`) is written in torch and drawn from a :class:`torch.Generator`, so a
:class:`BatchLoader` gives the same batches for the same seed and epoch. The files are read by
:mod:`spikegcn.vision.data` (CIFAR-10 JPEG, MNIST, digits) and :mod:`spikegcn.vision.cifar` (the official CIFAR-10).
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from .data import CIFAR_MEAN, CIFAR_STD, MNIST_MEAN, MNIST_STD, load_cifar10_jpg, load_digits, load_mnist

__all__ = [
    "to_float",
    "normalize",
    "Normalize",
    "random_crop_flip",
    "BatchLoader",
    "tensor_dataloader",
    "cifar10_loader",
    "mnist_loader",
    "digits_loader",
]


# ---------------------------------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------------------------------
def to_float(x: Tensor) -> Tensor:
    """``uint8`` images to ``float32`` in ``[0, 1]`` (``/255``); floating images are returned as they are."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    r"""Per-channel ``(x - mean) / std`` of ``[N, C, H, W]`` images (``uint8`` is first scaled to ``[0, 1]``)."""
    x = to_float(x)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


class Normalize(nn.Module):
    r"""Per-channel normalisation as a module (e.g. to put in front of a model that takes ``[0, 1]`` images;
    it is an affine map, so a converter can fold it into the first conv).

    Args:
        mean (Sequence[float]): per-channel means.
        std (Sequence[float]): per-channel standard deviations.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def random_crop_flip(
    x: Tensor, padding: int = 4, flip: bool = True, generator: Optional[torch.Generator] = None
) -> Tensor:
    r"""Standard CIFAR augmentation on a batch: zero-pad by :obj:`padding` pixels, crop back to the original size
    at a random offset, and flip horizontally with probability 1/2 (each image independently).

    Apply it to raw pixels (``uint8`` or ``[0, 1]`` floats) before normalisation, so that the padding is black
    as in the usual torchvision pipeline.

    Args:
        x (Tensor): images ``[N, C, H, W]``.
        padding (int, optional): pad width; :obj:`0` disables cropping. (default: :obj:`4`)
        flip (bool, optional): random horizontal flips. (default: :obj:`True`)
        generator (torch.Generator, optional): source of randomness. (default: :obj:`None`)
    """
    n, _, h, w = x.shape
    # drawn on the generator's device (the same numbers whatever the default device), used on the images' device
    rdev = generator.device if generator is not None else torch.device("cpu")
    if padding > 0:
        xp = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=rdev).to(x.device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=rdev).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [N, H, 1]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [N, 1, W]
        # Gather on a channels-last view: one advanced index gives [N, H, W, C].
        idx = torch.arange(n, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)
    if flip:
        m = (torch.rand(n, generator=generator, device=rdev) < 0.5).to(x.device)
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    return x.contiguous()


# ---------------------------------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------------------------------
class BatchLoader:
    r"""Mini-batches of an in-memory image tensor, with per-batch augmentation and normalisation.

    Shuffling and augmentation use a :class:`torch.Generator` reseeded from ``(seed, epoch)`` at the start of every
    pass, so epoch :math:`e` is the same on every run (and after a resume with :meth:`set_epoch`). Each pass over
    the loader advances the epoch counter.

    Args:
        images (Tensor): ``[N, C, H, W]``, ``uint8`` (scaled by 1/255 per batch) or floating.
        labels (Tensor): ``int64 [N]``.
        batch_size (int, optional): batch size. (default: :obj:`128`)
        shuffle (bool, optional): reshuffle every epoch. (default: :obj:`False`)
        augment (bool, optional): apply :func:`random_crop_flip`. (default: :obj:`False`)
        mean (Sequence[float], optional): normalisation mean; :obj:`None` keeps ``[0, 1]`` pixels.
            (default: :obj:`None`)
        std (Sequence[float], optional): normalisation std. (default: :obj:`None`)
        padding (int, optional): crop padding of the augmentation. (default: :obj:`4`)
        flip (bool, optional): horizontal flips in the augmentation. (default: :obj:`True`)
        seed (int, optional): seed of shuffling and augmentation. (default: :obj:`0`)
        drop_last (bool, optional): drop a last incomplete batch. (default: :obj:`False`)
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int = 128,
        shuffle: bool = False,
        augment: bool = False,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        padding: int = 4,
        flip: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.mean, self.std = mean, std
        self.padding, self.flip = padding, flip
        self.seed, self.drop_last = seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass draw the shuffling and augmentation of :obj:`epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def prepare(self, x: Tensor) -> Tensor:
        """Scale / normalise a batch the way this loader does (e.g. for calibration batches)."""
        return normalize(x, self.mean, self.std) if self.mean is not None else to_float(x)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        n = len(self.labels)
        order = torch.randperm(n, generator=g, device=g.device) if self.shuffle else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            if order is None:
                xb, yb = self.images[sl], self.labels[sl]
            else:
                idx = order[sl]
                xb, yb = self.images[idx], self.labels[idx]
            if self.augment:
                xb = random_crop_flip(xb, self.padding, self.flip, generator=g)
            yield self.prepare(xb), yb


def tensor_dataloader(
    images: Tensor, labels: Tensor, batch_size: int = 128, shuffle: bool = False, seed: int = 0, **kwargs
) -> DataLoader:
    r"""A plain :class:`torch.utils.data.DataLoader` over a :class:`~torch.utils.data.TensorDataset`, shuffled by
    a seeded generator (no augmentation; images are passed through unchanged). Extra keyword arguments go to
    :class:`~torch.utils.data.DataLoader`."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle, generator=g, **kwargs)


def _subset(x: Tensor, y: Tensor, subset: Union[None, int, slice, Tensor]) -> tuple[Tensor, Tensor]:
    if subset is None:
        return x, y
    if isinstance(subset, int):  # an evenly spread (hence class-balanced for sorted splits) subset of that size
        subset = torch.linspace(0, len(y) - 1, steps=min(subset, len(y))).round().long()
    return x[subset], y[subset]


def cifar10_loader(
    split: str = "test",
    batch_size: int = 128,
    *,
    augment: Optional[bool] = None,
    shuffle: Optional[bool] = None,
    seed: int = 0,
    subset: Union[None, int, slice, Tensor] = None,
    normalized: bool = True,
    dataset: str = "cifar10",
) -> BatchLoader:
    r"""A :class:`BatchLoader` over CIFAR-10.

    Args:
        split (str): ``"train"`` or ``"test"``.
        batch_size (int, optional): batch size. (default: :obj:`128`)
        augment (bool, optional): crop-and-flip augmentation; default: on for ``"train"``.
        shuffle (bool, optional): shuffle every epoch; default: on for ``"train"``.
        seed (int, optional): seed of shuffling and augmentation. (default: :obj:`0`)
        subset (int, slice or Tensor, optional): restrict to these indices; an int takes that many evenly spaced
            images (class-balanced, the splits being sorted by class). (default: :obj:`None`)
        normalized (bool, optional): normalise with :data:`CIFAR_MEAN` / :data:`CIFAR_STD`; else ``[0, 1]``.
            (default: :obj:`True`)
        dataset (str, optional): ``"cifar10"`` (the official release) or ``"cifar10-jpg"`` (the JPEG images).
            (default: :obj:`"cifar10"`)
    """
    from .cifar import load_cifar10

    if dataset not in ("cifar10", "cifar10-jpg"):
        raise ValueError(f"dataset must be 'cifar10' or 'cifar10-jpg', got {dataset!r}")
    x, y = _subset(*(load_cifar10(split) if dataset == "cifar10" else load_cifar10_jpg(split)), subset)
    train = split == "train"
    return BatchLoader(
        x, y, batch_size,
        shuffle=train if shuffle is None else shuffle,
        augment=train if augment is None else augment,
        mean=CIFAR_MEAN if normalized else None,
        std=CIFAR_STD if normalized else None,
        seed=seed,
    )


def mnist_loader(
    split: str = "train",
    batch_size: int = 128,
    *,
    shuffle: Optional[bool] = None,
    seed: int = 0,
    subset: Union[None, int, slice, Tensor] = None,
    normalized: bool = False,
) -> BatchLoader:
    r"""A :class:`BatchLoader` over MNIST (raw ``[0, 1)`` pixels unless :obj:`normalized`; shuffled for
    ``"train"`` by default; no augmentation)."""
    x, y = _subset(*load_mnist(split), subset)
    return BatchLoader(
        x, y, batch_size,
        shuffle=(split == "train") if shuffle is None else shuffle,
        mean=MNIST_MEAN if normalized else None,
        std=MNIST_STD if normalized else None,
        seed=seed,
    )


def digits_loader(
    split: str = "train", batch_size: int = 64, *, shuffle: Optional[bool] = None, seed: int = 0
) -> BatchLoader:
    r"""A :class:`BatchLoader` over sklearn digits (``[0, 1]`` pixels, 8x8; shuffled for ``"train"``)."""
    x, y = load_digits(split)  # fixed split; the seed only drives shuffling
    return BatchLoader(x, y, batch_size, shuffle=(split == "train") if shuffle is None else shuffle, seed=seed)
