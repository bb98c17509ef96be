"""Gram-matrix loss (Gatys, Ecker & Bethge 2015).

The Gram matrix of a feature map F (C x HW) holds the correlations between channels,
averaged over positions: it keeps what a texture is made of and drops where things are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from texsynth.errors import InvalidArgumentError
from texsynth.losses.base import at_least_float32, float32_statistics
from texsynth.losses.layered import LayeredLoss
from texsynth.losses.registry import register_loss

#: divisor of F Fᵀ for each normalization choice, as a function of (C, H, W).
GRAM_NORMALIZATIONS = {
    "chw": lambda c, h, w: c * h * w,  # scale-free in channels and pixels
    "4chw": lambda c, h, w: 4 * c * h * w,  # the reference implementation (Liu et al. 2016)
    "hw": lambda c, h, w: h * w,  # Gatys et al.: G = F Fᵀ / M
    "none": lambda c, h, w: 1,
}


def gram_matrix(features: torch.Tensor, normalization: str = "chw") -> torch.Tensor:
    """``(B, C, H, W)`` features to ``(B, C, C)`` Gram matrices ``F Fᵀ / norm``.

    Computed in float32 even for reduced-precision features and under autocast: Gram sums
    over all pixels lose too much in bfloat16.
    """
    if features.dim() != 4:
        raise InvalidArgumentError(
            f"gram_matrix expects (B, C, H, W) features, got shape {tuple(features.shape)}"
        )
    if normalization not in GRAM_NORMALIZATIONS:
        raise InvalidArgumentError(
            f"unknown Gram normalization {normalization!r}; known: {', '.join(GRAM_NORMALIZATIONS)}"
        )
    batch, channels, height, width = features.shape
    flat = at_least_float32(features.reshape(batch, channels, height * width))
    divisor = GRAM_NORMALIZATIONS[normalization](channels, height, width)
    with float32_statistics(flat.device):
        return _SelfOuterProduct.apply(flat) / divisor


#: channels per block row of the CPU Gram product (:func:`self_outer_product`)
GRAM_BLOCK_CHANNELS = 64


def self_outer_product(flat: torch.Tensor) -> torch.Tensor:
    """``bmm(F, Fᵀ)`` for ``(B, C, N)`` ``F``; on CPU by block rows of the upper triangle.

    The product is symmetric, so its blocks below the diagonal are transposes of those
    above: computing only ``F[i:i+GRAM_BLOCK_CHANNELS] F[i:]ᵀ`` does a little over half the
    arithmetic. On this CPU that is 1.2-1.5x faster (384 x 256² channels x pixels: 88 -> 73
    ms), with a result equal to the full product's up to float rounding (bit for bit in the
    measured cases; benchmarks/README.md, "Cheaper evaluations").
    GPUs keep the single product (not measured there).
    """
    channels = flat.shape[1]
    if flat.device.type != "cpu" or channels <= GRAM_BLOCK_CHANNELS:
        return torch.bmm(flat, flat.transpose(1, 2))
    gram = flat.new_empty(flat.shape[0], channels, channels)
    for top in range(0, channels, GRAM_BLOCK_CHANNELS):
        bottom = min(top + GRAM_BLOCK_CHANNELS, channels)
        rows = torch.bmm(flat[:, top:bottom], flat[:, top:].transpose(1, 2))
        gram[:, top:bottom, top:] = rows
        gram[:, bottom:, top:bottom] = rows[:, :, bottom - top:].transpose(1, 2)
    return gram


class _SelfOuterProduct(torch.autograd.Function):
    """``F Fᵀ`` with a backward pass of one matrix product instead of two.

    Autograd treats ``bmm(F, Fᵀ)`` as a product of two tensors: two ``(C x C) @ (C x N)``
    products plus an addition of two ``C x N`` gradients. Since both factors are ``F``, the
    gradient is ``(dG + dGᵀ) F``: one product, about a third less Gram arithmetic per
    evaluation (the Gram matrices of wide full-resolution layers dominate the weight-free
    backbones' cost). The backward is written with differentiable ops, so double backward
    works.
    """

    @staticmethod
    def forward(ctx, flat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat)
        return self_outer_product(flat)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        with float32_statistics(flat.device):  # a backward called under autocast
            return torch.bmm(grad + grad.transpose(1, 2), flat)


@register_loss("gram")
class GramLoss(LayeredLoss):
    """Σ_l w_l ‖G_l(output) − G_l(exemplar)‖², summed over the batch.

    Args:
        layers: backbone taps; default: the backbone's ``texture_layers``.
        layer_weights: one number for all layers, a sequence (one per layer) or a mapping.
        normalization: ``"chw"``, ``"4chw"`` (reference), ``"hw"`` (Gatys) or ``"none"``.
        relative: divide each layer's error by ‖G_l(exemplar)‖², so layers (and backbones)
            of very different activation scales weigh alike and weights near 1 make sense.
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        layer_weights: float | Sequence[float] | Mapping[str, float] = 1.0,
        normalization: str = "chw",
        relative: bool = False,
        weight: float = 1.0,
    ) -> None:
        if normalization not in GRAM_NORMALIZATIONS:
            raise InvalidArgumentError(
                f"gram normalization must be one of {', '.join(GRAM_NORMALIZATIONS)}, "
                f"got {normalization!r}"
            )
        super().__init__(layers, layer_weights, relative, weight)
        self.normalization = normalization

    def layer_target(self, name: str, features: torch.Tensor) -> torch.Tensor:
        return gram_matrix(features, self.normalization)

    def layer_loss(self, name: str, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (gram_matrix(features, self.normalization) - target).pow(2).sum()
