"""The contract every loss plugin follows.

A loss names the backbone layers it needs (``layers``; empty for a loss on pixels), computes
its target once from the exemplar (``set_target``), and returns an unweighted scalar for the
current image (``forward``). The synthesis module multiplies by ``weight``, sums the terms,
and runs the backbone once per evaluation for all losses together.

Images are batches ``(B, 3, H, W)`` in [0, 1]; features are ``(B, C, h, w)``. A loss must
treat batch samples independently (sum over the batch), so that each sample's optimum does
not depend on the others.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping

import torch
from torch import nn

from texsynth.backbones.base import Backbone
from texsynth.errors import InvalidArgumentError

Features = Mapping[str, torch.Tensor]


class TextureLoss(nn.Module):
    """Base class of loss plugins."""

    #: backbone layers the loss reads; empty means the loss works on pixels only.
    layers: tuple[str, ...] = ()
    #: attributes that hold the options a loss was built with, beyond the built-in losses' own
    #: (``texsynth.module.LOSS_OBJECT_OPTIONS``): a loss passed as an object, not by name, is
    #: recorded by them, and a resume with other values is refused
    option_attributes: tuple[str, ...] = ()

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = check_weight(weight, type(self).__name__)

    @property
    def uses_features(self) -> bool:
        return bool(self.layers)

    def bind(self, backbone: Backbone | None) -> None:
        """Called once with the backbone before targets are computed (e.g. to pick layers)."""

    def set_target(
        self, exemplar: torch.Tensor, features: Features, output_size: tuple[int, int]
    ) -> None:
        """Compute and store what the output must match (under ``torch.no_grad``)."""
        raise NotImplementedError

    def forward(self, image: torch.Tensor, features: Features) -> torch.Tensor:
        raise NotImplementedError

    def start_step(self) -> None:
        """Called before each L-BFGS step. A loss that changes during a run (new random
        projections) changes here, so that the line search within a step sees one function."""


def check_weight(weight: object, name: str) -> float:
    """A loss weight must be a finite, non-negative number."""
    try:
        value = float(weight)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"weight of {name} must be a number, got {weight!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"weight of {name} must be finite and >= 0, got {weight!r}")
    return value


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Statistics are computed in float32 (or float64 if given): half precision loses them."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def float32_statistics(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off, for statistics of a mixed-precision backbone's features.

    Casting features to float32 is not enough under autocast: it would round the products
    (Gram, covariance, projections) back to bfloat16.
    """
    device_type = torch.device(device).type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
