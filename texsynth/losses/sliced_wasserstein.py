"""Sliced Wasserstein loss (Heitz, Vanhoey, Chambon & Belcour, CVPR 2021).

Gram matrices match second-order statistics only; matching the full distribution of
feature vectors removes the contrast artefacts they leave. The sliced Wasserstein distance
projects features on random unit directions, sorts the projections over pixels and compares
them with the sorted projections of the exemplar's features. Directions are drawn anew before
each L-BFGS step (by default; see ``resample``), from a seeded generator so runs are
reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from texsynth.errors import InvalidArgumentError, require_count
from texsynth.losses.base import at_least_float32
from texsynth.losses.layered import LayeredLoss
from texsynth.losses.registry import register_loss
from texsynth.losses.sorting import sort_last


def sorted_projections(features: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` features on ``(C, D)`` directions -> ``(B, D, h·w)`` sorted values."""
    flat = at_least_float32(features).flatten(2)  # (B, C, N)
    projected = torch.einsum("bcn,cd->bdn", flat, directions.to(flat.dtype))
    return sort_last(projected)


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


#: when new random directions are drawn: before each L-BFGS step (the default: Heitz et al.'s
#: own code draws them per call of scipy's L-BFGS), at each evaluation (their PyTorch code,
#: whose L-BFGS has no line search), or once for the run
RESAMPLE_MODES = ("step", "evaluation", "never")


def resample_mode(value: object) -> str:
    """``resample`` as one of :data:`RESAMPLE_MODES`; True and False are "evaluation" and "never"."""
    if value is True or value is False:
        return "evaluation" if value else "never"
    if value not in RESAMPLE_MODES:
        raise InvalidArgumentError(
            f"sliced_wasserstein resample must be one of {', '.join(RESAMPLE_MODES)} (or true/false), got {value!r}"
        )
    return str(value)


@register_loss("sliced_wasserstein")
class SlicedWassersteinLoss(LayeredLoss):
    """Σ_l w_l SW²(features_l(output), features_l(exemplar)).

    Args:
        num_directions: projections per layer; default: the layer's channel count (Heitz).
        resample: when to draw new directions: ``"step"`` (before each L-BFGS step, so the
            strong-Wolfe line search sees one function within a step; redrawn at every
            evaluation it saw a different loss at each probe and diverged), ``"evaluation"``
            (for L-BFGS without a line search, as in the paper's PyTorch code) or ``"never"``.
        seed: seeds the direction generator.
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        layer_weights: float | Sequence[float] | Mapping[str, float] = 1.0,
        num_directions: int | None = None,
        resample: str | bool = "step",
        seed: int = 0,
        relative: bool = False,
        weight: float = 1.0,
    ) -> None:
        super().__init__(layers, layer_weights, relative, weight)
        self.num_directions = None if num_directions is None else require_count(
            num_directions, "sliced_wasserstein num_directions")
        self.resample = resample_mode(resample)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._fixed: dict[str, torch.Tensor] = {}
        # while the directions stay, the exemplar's sorted projections do too: sorted once per
        # (target tensor, directions) pair (a new exemplar, device or draw makes a new one)
        self._sorted_targets: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def start_step(self) -> None:
        if self.resample == "step":
            self._fixed.clear()

    def get_extra_state(self) -> dict[str, object]:
        """Saved in checkpoints, so a resumed run draws the directions the uninterrupted one would."""
        return {"generator": self._generator.get_state(),
                "directions": {name: tensor.cpu() for name, tensor in self._fixed.items()}}

    def set_extra_state(self, state: dict[str, object]) -> None:
        self._generator.set_state(state["generator"])
        self._fixed = dict(state["directions"])

    def directions(self, name: str, channels: int, device: torch.device) -> torch.Tensor:
        kept = self._fixed.get(name)
        if self.resample != "evaluation" and kept is not None:
            if kept.device != device:
                kept = self._fixed[name] = kept.to(device)
            return kept
        directions = unit_directions(channels, self.num_directions or channels, self._generator).to(device)
        self._fixed[name] = directions
        return directions

    def layer_target(self, name: str, features: torch.Tensor) -> torch.Tensor:
        return at_least_float32(features).detach().clone()

    def layer_scale(self, name: str, target: torch.Tensor) -> float:
        return max(float(target.pow(2).mean()), 1e-30)

    def layer_loss(self, name: str, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        directions = self.directions(name, features.shape[1], features.device)
        return sorted_distance(sorted_projections(features, directions), self.sorted_target(name, target, directions))

    def sorted_target(self, name: str, target: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        if self.resample == "evaluation":
            return sorted_projections(target, directions)
        cached = self._sorted_targets.get(name)
        if cached is None or cached[0] is not target or cached[1] is not directions:
            cached = (target, directions, sorted_projections(target, directions))
            self._sorted_targets[name] = cached
        return cached[2]
