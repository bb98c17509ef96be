"""Feature histogram loss (Risser, Wilmot & Barnes 2017, "Stable and controllable neural
texture synthesis and style transfer using histogram losses").

Gram matrices are blind to how activations are distributed beyond their second moments,
which shows as washed-out or over-contrasted textures. Per channel, the current activations
are remapped to the exemplar's histogram (exact matching: each value is replaced by the
exemplar quantile of its rank), and the loss is the squared distance to that remapped
target, which is held constant in the backward pass.
"""

from __future__ import annotations

import torch

from texsynth.losses.base import at_least_float32
from texsynth.losses.layered import LayeredLoss
from texsynth.losses.registry import register_loss
from texsynth.losses.sliced_wasserstein import match_length
from texsynth.losses.sorting import argsort_last, sort_last


def histogram_match(features: torch.Tensor, sorted_target: torch.Tensor) -> torch.Tensor:
    """Remap each channel of ``(B, C, h, w)`` features to the target's sorted values ``(1, C, N)``."""
    flat = at_least_float32(features).flatten(2)
    order = argsort_last(flat)
    quantiles = match_length(sorted_target, flat.shape[-1]).expand(flat.shape[0], -1, -1)
    # the k-th smallest value gets the k-th quantile: one sort and a scatter (ranks as the
    # argsort of the argsort cost a second sort: 0.67 -> 0.37 s for 384 channels at 128x128)
    return torch.empty_like(flat).scatter_(-1, order, quantiles).view_as(features)


@register_loss("histogram")
class HistogramLoss(LayeredLoss):
    """Σ_l w_l ‖F_l − match(F_l, histogram of F̂_l)‖² / N_l (match held constant)."""

    def layer_target(self, name: str, features: torch.Tensor) -> torch.Tensor:
        return sort_last(at_least_float32(features).flatten(2))

    def layer_scale(self, name: str, target: torch.Tensor) -> float:
        return max(float(target.pow(2).mean()) * target.shape[1], 1e-30)

    def layer_loss(self, name: str, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            matched = histogram_match(features, target)
        pixels = features.shape[-2] * features.shape[-1]
        return (at_least_float32(features) - matched).pow(2).sum() / pixels
