"""Value range: a penalty on pixels outside the exemplar's range.

Gatys et al. (2015) optimize with L-BFGS-B, bounded by the exemplar's pixel range.
``torch.optim.LBFGS`` has no bounds, so the image goes wherever the statistics pull it, and
saving clamps it to [0, 1] afterwards: the saved image is not the one whose statistics were
matched. On cracked_0063 at 256x256 (dark cracks) 3% of the pixels end below 0, down to
-0.4, both in the weight-free recipe without this term and in the reference recipe
(benchmarks/README.md, "Value range"). A penalty keeps the optimizer inside the range
without a projection step that L-BFGS's curvature pairs would not know about.
"""

from __future__ import annotations

import math

import torch

from texsynth.errors import InvalidArgumentError
from texsynth.losses.base import Features, TextureLoss, at_least_float32
from texsynth.losses.registry import register_loss


def range_excess(image: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of each sample's values to the interval ``[low, high]``, ``(B,)``."""
    image = at_least_float32(image)
    below = (low - image).clamp_min(0)
    above = (image - high).clamp_min(0)
    return (below.pow(2) + above.pow(2)).mean(dim=(1, 2, 3))


def _check_bounds(bounds: object) -> tuple[float, float] | None:
    """``"exemplar"`` → None (taken from the exemplar later); a (low, high) pair → floats."""
    if bounds == "exemplar":
        return None
    try:
        if isinstance(bounds, str):  # a string iterates: "01" is not the pair (0, 1)
            raise TypeError
        low, high = (float(value) for value in bounds)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidArgumentError(
            f"value_range bounds must be 'exemplar' or a pair (low, high) of numbers with low < high, "
            f"got {bounds!r}"
        )
    return low, high


@register_loss("value_range")
class ValueRangeLoss(TextureLoss):
    """mean over pixels and channels of the squared excess beyond the bounds, summed over the batch.

    Args:
        bounds: ``"exemplar"`` (each channel's minimum and maximum in the exemplar, as the
            L-BFGS-B bounds of Gatys et al.) or ``(low, high)`` for every channel, e.g.
            ``(0, 1)``.
    """

    def __init__(self, bounds: str | tuple[float, float] = "exemplar", weight: float = 1.0) -> None:
        super().__init__(weight)
        self.fixed_bounds = _check_bounds(bounds)

    def set_target(self, exemplar: torch.Tensor, features: Features, output_size: tuple[int, int]) -> None:
        if self.fixed_bounds is None:
            low = exemplar.amin(dim=(0, 2, 3), keepdim=True)
            high = exemplar.amax(dim=(0, 2, 3), keepdim=True)
        else:
            low, high = (torch.full((1, 1, 1, 1), value, device=exemplar.device) for value in self.fixed_bounds)
        self.register_buffer("low", at_least_float32(low), persistent=False)
        self.register_buffer("high", at_least_float32(high), persistent=False)

    def forward(self, image: torch.Tensor, features: Features) -> torch.Tensor:
        return range_excess(image, self.low, self.high).sum()
