"""The loss registry: ``register_loss`` / ``create_loss`` / ``list_losses``."""

from __future__ import annotations

from typing import Any, Callable

from texsynth._registry import Registry
from texsynth.losses.base import TextureLoss

LOSSES: Registry[TextureLoss] = Registry("loss", entry_point_group="texsynth.losses")


def register_loss(name: str | None = None, *, override: bool = False) -> Callable:
    """Decorator: make a ``TextureLoss`` subclass (or factory) available by ``name``."""
    return LOSSES.register(name, override=override)


def create_loss(name: str, **kwargs: Any) -> TextureLoss:
    """Build the loss registered as ``name``; keyword options go to its constructor."""
    return LOSSES.create(name, **kwargs)


def list_losses(pattern: str | None = None) -> list[str]:
    """Registered loss names, optionally filtered by a glob ``pattern``."""
    return LOSSES.names(pattern)
