"""Colour distribution loss: the exemplar's distribution of RGB pixel values.

Gram statistics of a backbone's features constrain colour only through second moments
mixed with structure, and the weight-free presets' random filters mix the channels at
random: on cracked_0063 at 256x256 the output's colour distance (sliced Wasserstein between
the pixel distributions) stayed at 0.010 where the reference recipe's noise start lands at
0.008 (benchmarks/README.md, "Colour distribution"). This term matches the pixel
distribution itself: the squared sliced Wasserstein distance between the output's and the
exemplar's RGB values, projected on a fixed set of directions. Fixed, not redrawn at each
evaluation as in Heitz et al. (2021): L-BFGS's line search needs the same function at every
evaluation of a step. With 3 channels a few directions already cover the colour space.
"""

from __future__ import annotations

import torch

from texsynth.errors import require_count
from texsynth.losses.base import Features, TextureLoss
from texsynth.losses.registry import register_loss
from texsynth.losses.sliced_wasserstein import sorted_distance, sorted_projections, unit_directions


@register_loss("color_distribution")
class ColorDistributionLoss(TextureLoss):
    """mean over directions and pixels of (sorted ⟨x, d⟩ − sorted ⟨x̂, d⟩)², summed over the batch.

    Outputs of another size than the exemplar compare against its sorted projections resampled
    to the output's pixel count (its quantiles).

    Args:
        num_directions: projections of the RGB values (fixed for the run).
        seed: seeds the directions.
    """

    def __init__(self, num_directions: int = 16, seed: int = 0, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.num_directions = require_count(num_directions, "color_distribution num_directions")
        self.seed = seed
        directions = unit_directions(3, num_directions, torch.Generator().manual_seed(seed))
        self.register_buffer("directions", directions, persistent=False)

    def set_target(self, exemplar: torch.Tensor, features: Features, output_size: tuple[int, int]) -> None:
        sorted_values = sorted_projections(exemplar, self.directions.to(exemplar.device))
        self.register_buffer("target", sorted_values, persistent=False)

    def forward(self, image: torch.Tensor, features: Features) -> torch.Tensor:
        return sorted_distance(sorted_projections(image, self.directions), self.target)
