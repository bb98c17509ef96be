"""Random filters shared by the weight-free backbones."""

from __future__ import annotations

import math

import torch

from texsynth.backbones.fast_conv import FastConv2d


def random_conv(in_channels: int, filters: int, kernel_size: int, generator: torch.Generator) -> FastConv2d:
    """A "same"-padded convolution with Glorot-uniform weights and zero bias.

    Drawn from a CPU ``generator`` (the same numbers on every machine), as Ustyuzhaninov et
    al. (2017) initialize their random single-layer network. Computed by ``FastConv2d``
    (matrix-product backward, FFT for large kernels, where measured faster).
    """
    conv = FastConv2d(in_channels, filters, kernel_size, padding=kernel_size // 2)
    fan_in, fan_out = in_channels * kernel_size**2, filters * kernel_size**2
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        conv.weight.copy_(torch.rand(conv.weight.shape, generator=generator) * 2 * bound - bound)
        conv.bias.zero_()
    return conv
