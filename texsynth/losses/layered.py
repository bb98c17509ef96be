"""Shared machinery of losses that compare statistics layer by layer (Gram, SW, …)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from texsynth.backbones.base import Backbone
from texsynth.errors import InvalidArgumentError
from texsynth.losses.base import Features, TextureLoss, check_weight


class LayeredLoss(TextureLoss):
    """Σ_l w_l · layer_loss(l), over ``layers`` (default: the backbone's ``texture_layers``).

    Subclasses implement :meth:`layer_target` (statistics of the exemplar's features, computed
    once) and :meth:`layer_loss` (distance of the current features to them).

    Args:
        layers: backbone taps; default: the backbone's ``texture_layers``.
        layer_weights: one number for all layers, a sequence (one per layer) or a mapping.
        relative: divide each layer's loss by its value for a zero image's statistics
            (``layer_scale``), so layers of very different activation scales weigh alike.
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        layer_weights: float | Sequence[float] | Mapping[str, float] = 1.0,
        relative: bool = False,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        self.relative = bool(relative)
        if isinstance(layers, str):  # one layer: tuple("relu1_1") would be its letters
            layers = (layers,)
        self._requested_layers = tuple(layers) if layers is not None else None
        self._layer_weights = layer_weights
        self.layers = self._requested_layers or ()
        self.layer_weights: dict[str, float] = {}
        self.layer_scales: dict[str, float] = {}
        if self._requested_layers is not None:
            self._resolve_weights()

    @property
    def loss_name(self) -> str:
        return type(self).__name__

    def bind(self, backbone: Backbone | None) -> None:
        if self._requested_layers is None:
            if backbone is None or not backbone.texture_layers:
                raise InvalidArgumentError(f"{self.loss_name} needs layers: the backbone names no default")
            self.layers = tuple(backbone.texture_layers)
            self._resolve_weights()

    def _resolve_weights(self) -> None:
        weights = self._layer_weights
        if isinstance(weights, Mapping):
            unknown = set(weights) - set(self.layers)
            if unknown:
                raise InvalidArgumentError(
                    f"{self.loss_name} layer_weights name unused layers {sorted(unknown)}"
                )
            values = [weights.get(name, 1.0) for name in self.layers]
        elif isinstance(weights, Sequence) and not isinstance(weights, str):
            if len(weights) != len(self.layers):
                raise InvalidArgumentError(
                    f"{self.loss_name} layer_weights has {len(weights)} values for {len(self.layers)} layers"
                )
            values = list(weights)
        else:
            values = [weights] * len(self.layers)
        self.layer_weights = {name: check_weight(value, f"{self.loss_name} layer {name!r}")
                              for name, value in zip(self.layers, values)}

    # ---------------------------------------------------------------- subclass API
    def layer_target(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """Statistics of the exemplar's ``(1, C, h, w)`` features at layer ``name``."""
        raise NotImplementedError

    def layer_loss(self, name: str, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unweighted loss of ``(B, C, h, w)`` features against ``target`` (summed over B)."""
        raise NotImplementedError

    def layer_scale(self, name: str, target: torch.Tensor) -> float:
        """Normalizer used when ``relative``: by default the squared norm of the target."""
        return max(float(target.pow(2).sum()), 1e-30)

    # ---------------------------------------------------------------- TextureLoss
    def set_target(self, exemplar: torch.Tensor, features: Features, output_size: tuple[int, int]) -> None:
        for name in self.layers:
            target = self.layer_target(name, features[name])
            self.register_buffer(_buffer_name(name), target, persistent=False)
            scale = 1.0 / self.layer_scale(name, target) if self.relative else 1.0
            self.layer_scales[name] = self.layer_weights[name] * scale

    def target(self, name: str) -> torch.Tensor:
        return getattr(self, _buffer_name(name))

    def forward(self, image: torch.Tensor, features: Features) -> torch.Tensor:
        total = torch.zeros((), device=image.device)
        for name in self.layers:
            total = total + self.layer_scales[name] * self.layer_loss(name, features[name], self.target(name))
        return total


def _buffer_name(layer: str) -> str:
    return "target_" + layer.replace(".", "__")
