"""Loss plugins, found by name.

Add one with a single file::

    from texsynth.losses import TextureLoss, register_loss

    @register_loss("mean_color")
    class MeanColor(TextureLoss):
        def set_target(self, exemplar, features, output_size):
            self.register_buffer("target", exemplar.mean(dim=(2, 3)), persistent=False)

        def forward(self, image, features):
            return (image.mean(dim=(2, 3)) - self.target).pow(2).sum()
"""

from texsynth.losses.base import TextureLoss, check_weight
from texsynth.losses.registry import LOSSES, create_loss, list_losses, register_loss

# Built-ins register themselves on import.
from texsynth.losses import (  # noqa: E402,F401  isort: skip
    chroma_spectrum,
    color_distribution,
    gram,
    histogram,
    mean_covariance,
    sliced_wasserstein,
    spectrum,
    total_variation,
    value_range,
)
from texsynth.losses.chroma_spectrum import ChromaSpectrumLoss  # noqa: E402
from texsynth.losses.color_distribution import ColorDistributionLoss  # noqa: E402
from texsynth.losses.gram import GramLoss, gram_matrix  # noqa: E402
from texsynth.losses.histogram import HistogramLoss  # noqa: E402
from texsynth.losses.layered import LayeredLoss  # noqa: E402
from texsynth.losses.mean_covariance import MeanCovarianceLoss  # noqa: E402
from texsynth.losses.sliced_wasserstein import SlicedWassersteinLoss  # noqa: E402
from texsynth.losses.spectrum import SpectrumLoss, luminance, opponent_channels, spectrum_projection  # noqa: E402
from texsynth.losses.total_variation import TotalVariationLoss, total_variation  # noqa: E402
from texsynth.losses.value_range import ValueRangeLoss  # noqa: E402

__all__ = [
    "LOSSES",
    "ChromaSpectrumLoss",
    "ColorDistributionLoss",
    "GramLoss",
    "HistogramLoss",
    "LayeredLoss",
    "MeanCovarianceLoss",
    "SlicedWassersteinLoss",
    "SpectrumLoss",
    "TotalVariationLoss",
    "TextureLoss",
    "ValueRangeLoss",
    "check_weight",
    "create_loss",
    "gram_matrix",
    "list_losses",
    "luminance",
    "opponent_channels",
    "register_loss",
    "spectrum_projection",
    "total_variation",
]
