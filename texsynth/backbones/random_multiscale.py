"""A weight-free backbone: one layer of random filters at several scales.

Ustyuzhaninov, Brendel, Gatys & Bethge, "What does it take to generate natural textures?"
(ICLR 2017): a single convolution layer with kernel sizes 3…55 (128 random filters each),
"same" zero padding, ReLU, and a Gram matrix of the responses synthesizes textures that can
rival VGG19's, with no training. Filters are Glorot-uniform with zero bias, drawn from a
CPU generator seeded with ``seed``, so every machine gets the same network.

Taps: ``conv{k}`` / ``relu{k}`` per kernel size ``k``, and ``stack``: all ReLU maps
concatenated (the paper's single joint Gram matrix).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from texsynth.backbones._random import random_conv
from texsynth.backbones.base import Backbone
from texsynth.backbones.registry import register_backbone
from texsynth.errors import InvalidArgumentError

PAPER_KERNEL_SIZES = (3, 5, 7, 11, 15, 23, 37, 55)
IMAGENET_MEAN = (0.485, 0.456, 0.406)


class RandomMultiscale(Backbone):
    def __init__(
        self,
        kernel_sizes: Sequence[int] = PAPER_KERNEL_SIZES,
        filters: int = 128,
        seed: int = 0,
    ) -> None:
        super().__init__()
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise InvalidArgumentError(f"kernel_sizes must be odd and positive, got {kernel_sizes}")
        if filters < 1:
            raise InvalidArgumentError(f"filters must be positive, got {filters}")
        self.kernel_sizes = kernel_sizes
        generator = torch.Generator().manual_seed(seed)
        for k in kernel_sizes:
            self.add_module(f"conv{k}", random_conv(3, filters, k, generator))
            self.add_module(f"relu{k}", nn.ReLU())
        self.add_module("stack", nn.Identity())
        # The paper feeds mean-subtracted 0-255 pixels.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.texture_layers = tuple(f"relu{k}" for k in kernel_sizes)
        self.freeze()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        centred = (image - self.mean) * 255.0
        maps = [getattr(self, f"relu{k}")(getattr(self, f"conv{k}")(centred)) for k in self.kernel_sizes]
        return self.stack(torch.cat(maps, dim=1))

    def receptive_field(self, layer: str) -> int | None:
        if layer == "stack":
            return max(self.kernel_sizes)
        kernel = layer[4:]
        if layer[:4] in ("conv", "relu") and kernel.isdigit() and int(kernel) in self.kernel_sizes:
            return int(kernel)
        return None

    def prune(self, layers: Sequence[str]) -> None:
        if "stack" in layers:
            return
        needed = {int(name[4:]) for name in layers if name[:4] in ("conv", "relu")}
        for k in self.kernel_sizes:
            if k not in needed:
                delattr(self, f"conv{k}")
                delattr(self, f"relu{k}")
        self.kernel_sizes = tuple(k for k in self.kernel_sizes if k in needed)


@register_backbone("random_multiscale")
def random_multiscale(
    kernel_sizes: Sequence[int] = PAPER_KERNEL_SIZES, filters: int = 128, seed: int = 0
) -> RandomMultiscale:
    """Weight-free single-layer random network (Ustyuzhaninov et al. 2017)."""
    return RandomMultiscale(kernel_sizes=kernel_sizes, filters=filters, seed=seed)
