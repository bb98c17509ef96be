"""The spectrum constraint on colour alone: against pink/green speckle on gray exemplars.

With random filter banks the Gram gradient mixes the RGB channels at random, so each L-BFGS
step injects fine-scale colour noise, and Gram statistics remove it only slowly: their loss
grows with the fourth power of a small noise (a statistic's change is quadratic in it), so
the noise sits in a nearly flat valley. On a gray exemplar that shows as pink/green speckle.
The spectrum constraint removes it, since its loss — a squared distance to a set — grows with
the square; but raising the spectrum weight also pulls the luminance towards the exemplar's
modulus and softens structure. This loss is the spectrum constraint on the two
opponent-colour channels (``SpectrumLoss(mode="chroma")``), so colour gets its own weight.
"""

from __future__ import annotations

import torch

from texsynth.errors import InvalidArgumentError
from texsynth.losses.base import Features, at_least_float32
from texsynth.losses.registry import register_loss
from texsynth.losses.spectrum import SpectrumLoss, opponent_channels

#: chroma standard deviation (0…1 scale) below which an exemplar counts as gray: 2 of 255
GRAY_LEVEL = 2 / 255


@register_loss("chroma_spectrum")
class ChromaSpectrumLoss(SpectrumLoss):
    """The chroma spectrum constraint, times ``gray_level² / (gray_level² + v)`` with ``v`` the
    exemplar's chroma variance (per opponent channel, averaged).

    The factor is 1 on a gray exemplar, where the loss is simply the output's colour energy,
    and fades on colourful ones (0.005 for autumn leaves): colour noise of a few levels is
    glaring on gray and invisible among strong colours, where a colour constraint would fight
    the Gram statistics over the colours' layout.

    Args:
        gray_level: chroma standard deviation (0…1) below which the exemplar counts as gray.
        eps: regularizer of the phase normalization.
        periodic: the exemplar's periodic component as target (on for tileable outputs).
        upsample: the target modulus of outputs larger than the exemplar (see SpectrumLoss).
    """

    def __init__(
        self,
        gray_level: float = GRAY_LEVEL,
        eps: float = 1e-11,
        periodic: bool = False,
        upsample: str = "sharp",
        weight: float = 1.0,
    ) -> None:
        super().__init__(mode="chroma", eps=eps, reduction="mean", periodic=periodic, upsample=upsample, weight=weight)
        if not (isinstance(gray_level, (int, float)) and gray_level > 0):
            raise InvalidArgumentError(f"chroma_spectrum gray_level must be a number > 0, got {gray_level!r}")
        self.gray_level = float(gray_level)
        self.grayness = 1.0

    def set_target(self, exemplar: torch.Tensor, features: Features, output_size: tuple[int, int]) -> None:
        super().set_target(exemplar, features, output_size)
        variance = opponent_channels(at_least_float32(exemplar)).var(dim=(-2, -1), correction=0).mean()
        self.grayness = float(self.gray_level**2 / (self.gray_level**2 + variance))

    def forward(self, image: torch.Tensor, features: Features) -> torch.Tensor:
        return self.grayness * super().forward(image, features)
