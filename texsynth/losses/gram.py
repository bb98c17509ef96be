"""Gram-matrix loss (Gatys, Ecker & Bethge 2015).

The Gram matrix of a feature map F (C x HW) holds the correlations between channels,
averaged over positions: it keeps what a texture is made of and drops where things are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from texsynth.backbones.base import Backbone
from texsynth.errors import InvalidArgumentError
from texsynth.losses.base import Features, TextureLoss, at_least_float32
from texsynth.losses.registry import register_loss

#: divisor of F Fᵀ for each normalization choice, as a function of (C, H, W).
GRAM_NORMALIZATIONS = {
    "chw": lambda c, h, w: c * h * w,  # scale-free in channels and pixels
    "4chw": lambda c, h, w: 4 * c * h * w,  # the reference implementation (Liu et al. 2016)
    "hw": lambda c, h, w: h * w,  # Gatys et al.: G = F Fᵀ / M
    "none": lambda c, h, w: 1,
}


def gram_matrix(features: torch.Tensor, normalization: str = "chw") -> torch.Tensor:
    """``(B, C, H, W)`` features to ``(B, C, C)`` Gram matrices ``F Fᵀ / norm``.

    Computed in float32 even when features are reduced precision: Gram sums over all
    pixels lose too much in bfloat16.
    """
    if features.dim() != 4:
        raise InvalidArgumentError(
            f"gram_matrix expects (B, C, H, W) features, got shape {tuple(features.shape)}"
        )
    if normalization not in GRAM_NORMALIZATIONS:
        raise InvalidArgumentError(
            f"unknown Gram normalization {normalization!r}; known: {', '.join(GRAM_NORMALIZATIONS)}"
        )
    batch, channels, height, width = features.shape
    flat = at_least_float32(features.reshape(batch, channels, height * width))
    divisor = GRAM_NORMALIZATIONS[normalization](channels, height, width)
    return torch.bmm(flat, flat.transpose(1, 2)) / divisor


@register_loss("gram")
class GramLoss(TextureLoss):
    """Σ_l w_l ‖G_l(output) − G_l(exemplar)‖², summed over the batch.

    Args:
        layers: backbone taps; default: the backbone's ``texture_layers``.
        layer_weights: one number for all layers, a sequence (one per layer) or a mapping.
        normalization: ``"chw"``, ``"4chw"`` (reference), ``"hw"`` (Gatys) or ``"none"``.
        relative: divide each layer's error by ‖G_l(exemplar)‖², so layers (and backbones)
            of very different activation scales weigh alike and weights near 1 make sense.
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        layer_weights: float | Sequence[float] | Mapping[str, float] = 1.0,
        normalization: str = "chw",
        relative: bool = False,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        self.relative = bool(relative)
        if normalization not in GRAM_NORMALIZATIONS:
            raise InvalidArgumentError(
                f"gram normalization must be one of {', '.join(GRAM_NORMALIZATIONS)}, "
                f"got {normalization!r}"
            )
        self.normalization = normalization
        self._requested_layers = tuple(layers) if layers is not None else None
        self._layer_weights = layer_weights
        self.layers = self._requested_layers or ()
        self.layer_weights: dict[str, float] = {}
        if self._requested_layers is not None:
            self._resolve_weights()

    def bind(self, backbone: Backbone | None) -> None:
        if self._requested_layers is None:
            if backbone is None or not backbone.texture_layers:
                raise InvalidArgumentError("gram loss needs layers: the backbone names no default")
            self.layers = tuple(backbone.texture_layers)
            self._resolve_weights()

    def _resolve_weights(self) -> None:
        weights = self._layer_weights
        if isinstance(weights, Mapping):
            unknown = set(weights) - set(self.layers)
            if unknown:
                raise InvalidArgumentError(f"gram layer_weights name unused layers {sorted(unknown)}")
            values = [float(weights.get(name, 1.0)) for name in self.layers]
        elif isinstance(weights, Sequence) and not isinstance(weights, str):
            if len(weights) != len(self.layers):
                raise InvalidArgumentError(
                    f"gram layer_weights has {len(weights)} values for {len(self.layers)} layers"
                )
            values = [float(w) for w in weights]
        else:
            values = [float(weights)] * len(self.layers)
        self.layer_weights = dict(zip(self.layers, values))

    def set_target(self, exemplar: torch.Tensor, features: Features, output_size: tuple[int, int]) -> None:
        self.layer_scales: dict[str, float] = {}
        for name in self.layers:
            target = gram_matrix(features[name], self.normalization)
            self.register_buffer(_buffer_name(name), target, persistent=False)
            scale = 1.0 / max(float(target.pow(2).sum()), 1e-30) if self.relative else 1.0
            self.layer_scales[name] = self.layer_weights[name] * scale

    def forward(self, image: torch.Tensor, features: Features) -> torch.Tensor:
        total = torch.zeros((), device=image.device)
        for name in self.layers:
            difference = gram_matrix(features[name], self.normalization) - getattr(self, _buffer_name(name))
            total = total + self.layer_scales[name] * difference.pow(2).sum()
        return total


def _buffer_name(layer: str) -> str:
    return "target_" + layer.replace(".", "__")
