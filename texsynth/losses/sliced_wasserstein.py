"""Sliced Wasserstein loss (Heitz, Vanhoey, Chambon & Belcour, CVPR 2021).

Gram matrices match second-order statistics only; matching the full distribution of
feature vectors removes the contrast artefacts they leave. The sliced Wasserstein distance
projects features on random unit directions, sorts the projections over pixels and compares
them with the sorted projections of the exemplar's features. Directions are drawn anew at
each evaluation (as in the paper), from a seeded generator so runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from texsynth.losses.base import at_least_float32
from texsynth.losses.layered import LayeredLoss
from texsynth.losses.registry import register_loss


def sorted_projections(features: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` features on ``(C, D)`` directions -> ``(B, D, h·w)`` sorted values."""
    flat = at_least_float32(features).flatten(2)  # (B, C, N)
    projected = torch.einsum("bcn,cd->bdn", flat, directions.to(flat.dtype))
    return torch.sort(projected, dim=-1).values


def match_length(sorted_values: torch.Tensor, length: int) -> torch.Tensor:
    """Resample sorted values (quantiles) to ``length`` samples: outputs of another size."""
    if sorted_values.shape[-1] == length:
        return sorted_values
    batch, directions, _ = sorted_values.shape
    resampled = F.interpolate(sorted_values.reshape(batch * directions, 1, -1), size=length,
                              mode="linear", align_corners=True)
    return resampled.reshape(batch, directions, length)


def sliced_wasserstein(
    features: torch.Tensor, target_features: torch.Tensor, directions: torch.Tensor
) -> torch.Tensor:
    """Mean squared difference of sorted projections, summed over the batch."""
    return sorted_distance(sorted_projections(features, directions), sorted_projections(target_features, directions))


def sorted_distance(current: torch.Tensor, sorted_target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of ``(B, D, N)`` sorted values and the target's (resampled to
    ``N``), summed over the batch."""
    target = match_length(sorted_target, current.shape[-1])
    return (current - target).pow(2).mean(dim=(1, 2)).sum()


def unit_directions(channels: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``(channels, count)`` random unit directions drawn from ``generator``."""
    directions = torch.randn(channels, count, generator=generator)
    return directions / directions.norm(dim=0, keepdim=True)


@register_loss("sliced_wasserstein")
class SlicedWassersteinLoss(LayeredLoss):
    """Σ_l w_l SW²(features_l(output), features_l(exemplar)).

    Args:
        num_directions: projections per layer; default: the layer's channel count (Heitz).
        resample: draw new directions at each evaluation (the paper) or keep one set.
        seed: seeds the direction generator.
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        layer_weights: float | Sequence[float] | Mapping[str, float] = 1.0,
        num_directions: int | None = None,
        resample: bool = True,
        seed: int = 0,
        relative: bool = False,
        weight: float = 1.0,
    ) -> None:
        super().__init__(layers, layer_weights, relative, weight)
        self.num_directions = num_directions
        self.resample = resample
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._fixed: dict[str, torch.Tensor] = {}
        # with fixed directions the exemplar's sorted projections never change: sorted once per
        # target tensor (a new exemplar or a move to another device makes a new one)
        self._sorted_targets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def directions(self, name: str, channels: int, device: torch.device) -> torch.Tensor:
        if not self.resample and name in self._fixed:
            return self._fixed[name].to(device)
        directions = unit_directions(channels, self.num_directions or channels, self._generator)
        self._fixed[name] = directions
        return directions.to(device)

    def layer_target(self, name: str, features: torch.Tensor) -> torch.Tensor:
        return at_least_float32(features).detach().clone()

    def layer_scale(self, name: str, target: torch.Tensor) -> float:
        return max(float(target.pow(2).mean()), 1e-30)

    def layer_loss(self, name: str, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        directions = self.directions(name, features.shape[1], features.device)
        return sorted_distance(sorted_projections(features, directions), self.sorted_target(name, target, directions))

    def sorted_target(self, name: str, target: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        if self.resample:
            return sorted_projections(target, directions)
        cached = self._sorted_targets.get(name)
        if cached is None or cached[0] is not target:
            cached = (target, sorted_projections(target, directions))
            self._sorted_targets[name] = cached
        return cached[1]
