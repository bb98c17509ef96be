"""Frozen feature networks, found by name.

Add one with a single file::

    from texsynth.backbones import Backbone, register_backbone

    @register_backbone("my_net")
    class MyNet(Backbone):
        texture_layers = ("relu1", "relu2")
        ...
"""

from texsynth.backbones.base import Backbone
from texsynth.backbones.registry import (
    BACKBONES,
    create_backbone,
    list_backbones,
    register_backbone,
)

# Built-ins register themselves on import.
from texsynth.backbones import random_multiscale, random_pyramid, vgg  # noqa: E402,F401  isort: skip

__all__ = ["BACKBONES", "Backbone", "create_backbone", "list_backbones", "register_backbone"]
