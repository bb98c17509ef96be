"""The backbone registry: ``register_backbone`` / ``create_backbone`` / ``list_backbones``."""

from __future__ import annotations

from typing import Any, Callable

from texsynth._registry import Registry
from texsynth.backbones.base import Backbone

BACKBONES: Registry[Backbone] = Registry("backbone", entry_point_group="texsynth.backbones")


def register_backbone(name: str | None = None, *, override: bool = False) -> Callable:
    """Decorator: make a ``Backbone`` class or factory available by ``name``."""
    return BACKBONES.register(name, override=override)


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name`` with keyword options."""
    return BACKBONES.create(name, **kwargs)


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names, optionally filtered by a glob ``pattern``."""
    return BACKBONES.names(pattern)
