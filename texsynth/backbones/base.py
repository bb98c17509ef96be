"""What every backbone provides: a frozen network with named layers to tap."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from texsynth.errors import InvalidArgumentError


class Backbone(nn.Module):
    """A frozen feature network.

    Subclasses name their layers (``named_modules()`` names are the tap names) and say which
    layers statistics losses use by default (``texture_layers``). Weights are stored as
    non-persistent buffers, not parameters: the synthesis module's only parameter is then the
    image, optimizers cannot pick the weights up by accident, no weight gradients are ever
    computed, and checkpoints stay small (the weights come from their source, not the
    checkpoint). The network is always in eval mode, whatever ``train()`` is asked.
    """

    #: layers used by statistics losses (e.g. Gram) when a loss names none.
    texture_layers: tuple[str, ...] = ()
    #: True when ``forward`` runs the children in order, each on the previous one's output
    #: (lets the feature extractor checkpoint the segments between taps).
    sequential: bool = False

    def freeze(self) -> Backbone:
        freeze_module(self)
        return self

    def train(self, mode: bool = True) -> Backbone:  # noqa: ARG002 - frozen on purpose
        return super().train(False)

    def check_layers(self, layers: Sequence[str]) -> None:
        """Raise a clear error if a requested tap does not exist (or cannot be used)."""
        available = {name for name, _ in self.named_modules() if name}
        missing = [name for name in layers if name not in available]
        if missing:
            raise InvalidArgumentError(
                f"{type(self).__name__} has no layer(s) {', '.join(map(repr, missing))}; "
                f"available: {', '.join(sorted(available))}"
            )

    def min_size(self, layers: Sequence[str]) -> int:
        """Smallest input side (pixels) for which every layer in ``layers`` is non-empty."""
        return 1

    def prune(self, layers: Sequence[str]) -> None:
        """Drop modules that ``layers`` never need (frees memory); default keeps everything."""

    def receptive_field(self, layer: str) -> int | None:
        """Side, in input pixels, of the window one feature of ``layer`` sees; None if unknown.

        Coarse-to-fine synthesis uses it to keep, at a downscaled stage, only the layers whose
        window the full-size run also has (:mod:`texsynth.multiscale`).
        """
        return None

    def set_circular_padding(self, enabled: bool = True) -> None:
        """Make convolutions wrap around the image border (for periodic outputs)."""
        set_circular_padding(self, enabled)

    @property
    def device(self) -> torch.device:
        tensor = next(iter(self.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")


def _as_pair(value: object) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),)  # type: ignore[arg-type]


def freeze_module(module: nn.Module) -> nn.Module:
    """Turn every parameter of ``module`` into a non-persistent buffer and set eval mode.

    Any ``nn.Module`` can then serve as a backbone without becoming trainable: it has no
    parameters left for an optimizer or a gradient to reach.
    """
    for submodule in module.modules():
        for name, param in list(submodule._parameters.items()):
            if param is None:
                continue
            del submodule._parameters[name]
            submodule.register_buffer(name, param.detach(), persistent=False)
    return nn.Module.train(module, False)


def circular_pad(image: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Pad ``(..., H, W)`` by ``pad_h`` rows and ``pad_w`` columns on each side with the image's
    periodic extension, by any amount: ``F.pad``'s circular mode refuses to wrap around more
    than once, which a small coarse level of a tiled pyramid needs (a 16x16 exemplar's 4x4
    level under an 11x11 kernel)."""
    height, width = image.shape[-2:]
    if pad_h <= height and pad_w <= width:
        return F.pad(image, (pad_w, pad_w, pad_h, pad_h), mode="circular")
    reps_h, reps_w = 1 + 2 * math.ceil(pad_h / height), 1 + 2 * math.ceil(pad_w / width)
    tiled = image.repeat(*([1] * (image.dim() - 2)), reps_h, reps_w)
    top, left = (reps_h // 2) * height - pad_h, (reps_w // 2) * width - pad_w
    return tiled[..., top:top + height + 2 * pad_h, left:left + width + 2 * pad_w]


def pad2d(image: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad ``(..., H, W)`` on each side with an ``nn.Conv2d`` padding mode ("zeros", "reflect",
    "replicate", "circular"); circular padding wraps around as often as needed."""
    if mode == "circular":
        return circular_pad(image, pad_h, pad_w)
    return F.pad(image, (pad_w, pad_w, pad_h, pad_h), mode="constant" if mode == "zeros" else mode)


def set_circular_padding(module: nn.Module, enabled: bool = True) -> None:
    """Switch every padded ``Conv2d`` in ``module`` to circular (or back to zero) padding."""
    for submodule in module.modules():
        if isinstance(submodule, nn.Conv2d) and any(p > 0 for p in _as_pair(submodule.padding)):
            submodule.padding_mode = "circular" if enabled else "zeros"
