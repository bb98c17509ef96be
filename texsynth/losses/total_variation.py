"""Total variation: how much neighbouring pixels differ.

As a regularizer (``target=None``) it smooths speckle; by default it instead matches the
exemplar's own total variation, so it pulls the output's sharpness towards the exemplar's
rather than blurring a crisp texture.
"""

from __future__ import annotations

import torch

from texsynth.errors import InvalidArgumentError
from texsynth.losses.base import Features, TextureLoss, at_least_float32
from texsynth.losses.registry import register_loss


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between horizontal and vertical neighbours, per sample ``(B,)``."""
    image = at_least_float32(image)
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean(dim=(1, 2, 3))
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean(dim=(1, 2, 3))
    return dx + dy


@register_loss("total_variation")
class TotalVariationLoss(TextureLoss):
    """``(TV(x) − TV(exemplar))²`` per sample (``target="exemplar"``), or ``TV(x)`` (``None``)."""

    layers = ()

    def __init__(self, target: str | None = "exemplar", weight: float = 1.0) -> None:
        super().__init__(weight)
        if target not in ("exemplar", None):
            raise InvalidArgumentError(f"total_variation target must be 'exemplar' or None, got {target!r}")
        self.match_exemplar = target == "exemplar"

    def set_target(self, exemplar: torch.Tensor, features: Features, output_size: tuple[int, int]) -> None:
        self.register_buffer("target", total_variation(exemplar)[0], persistent=False)

    def forward(self, image: torch.Tensor, features: Features) -> torch.Tensor:
        value = total_variation(image)
        if self.match_exemplar:
            return (value - self.target).pow(2).sum() / self.target.clamp_min(1e-12).pow(2)
        return value.sum()
