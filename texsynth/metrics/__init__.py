"""Texture quality metrics: torchmetrics classes and functional forms, all weight-free."""

from texsynth.metrics.functional import (
    chroma_noise,
    color_distance,
    copy_score,
    laplacian_pyramid,
    lbp_distance,
    patch_swd,
    seam_score,
    self_similarity,
    spectrum_distance,
    texture_metrics,
    welch_power_spectrum,
)
from texsynth.metrics.modules import (
    ChromaNoise,
    ColorDistance,
    CopyScore,
    LBPDistance,
    PatchSlicedWasserstein,
    SpectrumDistance,
)

__all__ = [
    "ChromaNoise",
    "ColorDistance",
    "CopyScore",
    "LBPDistance",
    "PatchSlicedWasserstein",
    "SpectrumDistance",
    "chroma_noise",
    "color_distance",
    "copy_score",
    "laplacian_pyramid",
    "lbp_distance",
    "patch_swd",
    "seam_score",
    "self_similarity",
    "spectrum_distance",
    "texture_metrics",
    "welch_power_spectrum",
]
