"""texsynth: optimization-based neural texture synthesis on PyTorch Lightning.

Gram statistics of CNN features (Gatys et al. 2015) plus a Fourier spectrum constraint
(Liu, Gousseau & Xia 2016), optimized with L-BFGS over the image, with loss and backbone
plugins found by name.
"""

from texsynth import _logging  # noqa: F401  (configures the "texsynth" logger)
from texsynth.api import SynthesisResult, TextureSynthesisCNN, synthesize
from texsynth.batching import BatchResult, batch
from texsynth.errors import (
    CheckpointError,
    ImageLoadError,
    InvalidArgumentError,
    OutputWriteError,
    TexsynthError,
    WeightsUnavailableError,
)
from texsynth.examples import list_examples, load_example
from texsynth.image_io import load_image, save_image
from texsynth.module import TextureSynthesis
from texsynth.presets import Preset, list_presets, register_preset

__version__ = "0.1.0"

__all__ = [
    "BatchResult",
    "CheckpointError",
    "ImageLoadError",
    "InvalidArgumentError",
    "OutputWriteError",
    "Preset",
    "SynthesisResult",
    "TexsynthError",
    "TextureSynthesis",
    "TextureSynthesisCNN",
    "WeightsUnavailableError",
    "batch",
    "list_examples",
    "list_presets",
    "load_example",
    "load_image",
    "register_preset",
    "save_image",
    "synthesize",
    "__version__",
]
