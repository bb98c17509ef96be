"""A cheaper weight-free backbone: random filter banks on a Gaussian pyramid.

The single random layer of Ustyuzhaninov et al. (ICLR 2017) reaches large receptive fields
with 37x37 and 55x55 kernels, which cost 82% of its arithmetic. Applying small random banks
to a blurred, subsampled pyramid of the image reaches similar receptive fields for a
fraction of the cost: at full resolution 3x3, 7x7 and 11x11 banks; at each coarser level
(5-tap binomial blur, stride 2) one 11x11 bank. Random weights are Glorot-uniform with zero
bias from a fixed-seed CPU generator (the same network on every machine).

Taps: ``level{i}`` (all ReLU maps of pyramid level ``i``, concatenated) and
``level{i}.k{k}`` (one bank).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from texsynth.backbones._random import random_conv
from texsynth.backbones.base import Backbone, pad2d
from texsynth.backbones.fast_conv import banks_relu
from texsynth.backbones.registry import register_backbone
from texsynth.errors import InvalidArgumentError

BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)


class Downsample(nn.Module):
    """5-tap binomial blur and stride-2 subsampling, per channel (one pyramid level)."""

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor(BINOMIAL_5)
        kernel = torch.outer(taps, taps) / taps.sum() ** 2
        self.register_buffer("kernel", kernel.expand(3, 1, 5, 5).contiguous(), persistent=False)
        self.padding_mode = "reflect"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        padded = pad2d(image, 2, 2, self.padding_mode)  # tiled coarse levels may be smaller than the padding
        return F.conv2d(padded, self.kernel.to(image.dtype), stride=2, groups=3)


class RandomBanks(nn.Module):
    """Several random convolution banks on one input, ReLU, concatenated along channels."""

    def __init__(self, kernel_sizes: Sequence[int], filters: int, generator: torch.Generator) -> None:
        super().__init__()
        self.kernel_sizes = tuple(kernel_sizes)
        for k in self.kernel_sizes:
            self.add_module(f"conv{k}", random_conv(3, filters, k, generator))
            self.add_module(f"k{k}", nn.ReLU())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        relus = [getattr(self, f"k{k}") for k in self.kernel_sizes]
        if not any(relu._forward_hooks for relu in relus):  # no single bank tapped: fused, one copy
            return banks_relu(image, tuple(getattr(self, f"conv{k}") for k in self.kernel_sizes))
        maps = [relu(getattr(self, f"conv{k}")(image)) for k, relu in zip(self.kernel_sizes, relus)]
        return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)


class RandomPyramid(Backbone):
    def __init__(
        self,
        levels: int = 3,
        fine_kernel_sizes: Sequence[int] = (3, 7, 11),
        coarse_kernel_size: int = 11,
        filters: int | Sequence[int] = 128,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise InvalidArgumentError(f"levels must be >= 1, got {levels}")
        counts = [int(filters)] * levels if isinstance(filters, int) else [int(f) for f in filters]
        if len(counts) != levels or min(counts) < 1:
            raise InvalidArgumentError(f"filters must be one positive count or one per level, got {filters}")
        generator = torch.Generator().manual_seed(seed)
        self.levels = levels
        for level in range(levels):
            if level > 0:
                self.add_module(f"down{level}", Downsample())
            sizes = tuple(fine_kernel_sizes) if level == 0 else (coarse_kernel_size,)
            self.add_module(f"level{level}", RandomBanks(sizes, counts[level], generator))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.texture_layers = tuple(f"level{i}" for i in range(levels))
        self.freeze()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        current = (image - self.mean) * 255.0
        output = None
        for level in range(self.levels):
            if level > 0:
                current = getattr(self, f"down{level}")(current)
            output = getattr(self, f"level{level}")(current)
        return output

    def min_size(self, layers: Sequence[str]) -> int:
        return 3 * 2 ** _deepest_level(layers)  # reflect padding of the blur needs 3 pixels at the coarsest level

    def set_circular_padding(self, enabled: bool = True) -> None:
        super().set_circular_padding(enabled)
        for module in self.modules():
            if isinstance(module, Downsample):
                module.padding_mode = "circular" if enabled else "reflect"

    def receptive_field(self, layer: str) -> int | None:
        level, _, bank = layer.partition(".")
        banks = getattr(self, level, None) if level[len("level"):].isdigit() else None
        if not isinstance(banks, RandomBanks):
            return None
        kernels = [k for k in banks.kernel_sizes if not bank or bank == f"k{k}"]
        if not kernels:
            return None
        jump = 2 ** int(level[len("level"):])  # input pixels between neighbouring features of this level
        blurred = 1 + (len(BINOMIAL_5) - 1) * (jump - 1)  # window of the blur-and-subsample steps before it
        return blurred + (max(kernels) - 1) * jump

    def prune(self, layers: Sequence[str]) -> None:
        deepest = _deepest_level(layers)
        for level in range(deepest + 1, self.levels):
            delattr(self, f"level{level}")
            delattr(self, f"down{level}")
        self.levels = deepest + 1


def _deepest_level(layers: Sequence[str]) -> int:
    """``level2`` / ``level2.k11`` -> 2, the deepest pyramid level among ``layers``."""
    return max(int(name[len("level"):].split(".")[0]) for name in layers)


@register_backbone("random_pyramid")
def random_pyramid(
    levels: int = 3,
    fine_kernel_sizes: Sequence[int] = (3, 7, 11),
    coarse_kernel_size: int = 11,
    filters: int | Sequence[int] = 128,
    seed: int = 0,
) -> RandomPyramid:
    """Weight-free random filter banks on a Gaussian pyramid (cheap Ustyuzhaninov et al.)."""
    return RandomPyramid(levels, fine_kernel_sizes, coarse_kernel_size, filters, seed)
