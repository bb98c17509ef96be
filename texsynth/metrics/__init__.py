"""Texture quality metrics: torchmetrics classes and functional forms, all weight-free."""

from texsynth.metrics.functional import (
    color_distance,
    copy_score,
    laplacian_pyramid,
    lbp_distance,
    patch_swd,
    seam_score,
    spectrum_distance,
    texture_metrics,
    welch_power_spectrum,
)
from texsynth.metrics.modules import (
    ColorDistance,
    CopyScore,
    LBPDistance,
    PatchSlicedWasserstein,
    SpectrumDistance,
)

__all__ = [
    "ColorDistance",
    "CopyScore",
    "LBPDistance",
    "PatchSlicedWasserstein",
    "SpectrumDistance",
    "color_distance",
    "copy_score",
    "laplacian_pyramid",
    "lbp_distance",
    "patch_swd",
    "seam_score",
    "spectrum_distance",
    "texture_metrics",
    "welch_power_spectrum",
]
