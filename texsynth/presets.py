"""Named recipes: a backbone, its options, losses with weights, initialization, optimizer.

``liu2016`` reproduces the reference implementation's numerics exactly (see the README),
so its loss values are comparable with the reference's published ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from texsynth._registry import Registry
from texsynth.multiscale import (require_coarse_layers, require_coarse_starts, require_coarse_steps,
                                 require_starts_have_a_stage)

LBFGS_DEFAULTS: dict[str, Any] = {
    "lr": 1.0,
    "max_iter": 20,
    "history_size": 100,
    "line_search_fn": None,
    "tolerance_grad": 1e-7,
    "tolerance_change": 1e-9,
    # not torch's: L-BFGS minimizes the total loss times this factor (see LBFGS_WOLFE)
    "loss_scale": 1.0,
}
#: the options of LBFGS_DEFAULTS that are texsynth's, not ``torch.optim.LBFGS``'s
TEXSYNTH_LBFGS_OPTIONS = ("loss_scale",)


def torch_lbfgs_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options ``torch.optim.LBFGS`` takes, from texsynth's L-BFGS settings."""
    return {key: value for key, value in options.items() if key not in TEXSYNTH_LBFGS_OPTIONS}


#: L-BFGS steps of a run unless told otherwise (CLI, ``synthesize``, ``batch``): about 175
#: evaluations with the strong-Wolfe presets. Many more drift towards a copy of the exemplar
#: on small outputs (README, Performance: 24 steps at 128x128 reach copy scores of 0.6-0.8).
DEFAULT_STEPS = 8


@dataclass(frozen=True)
class Preset:
    """Everything a run needs besides the exemplar, the size and the seed."""

    name: str
    description: str
    backbone: str
    backbone_options: dict[str, Any] = field(default_factory=dict)
    #: loss name -> constructor options (``weight`` included).
    losses: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: options of losses the recipe does not use, for when a user adds one (``--loss NAME=W``):
    #: what suits this recipe (the scale-free presets: relative per-layer terms); the user's
    #: own options override them.
    loss_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    init: str = "sigmoid"
    #: exemplar preprocessing: centre crop + resize to this size (None keeps it as given).
    exemplar_size: int | tuple[int, int] | None = None
    lbfgs: dict[str, Any] = field(default_factory=lambda: dict(LBFGS_DEFAULTS))
    #: coarse-to-fine stages before the full size (1/2^k of it; see texsynth.multiscale)
    coarse_levels: int = 0
    #: L-BFGS steps of each coarse stage (None: as many as the full-size run). A few steps
    #: give the full size a head start; many settle the exemplar's layout, i.e. copy it.
    coarse_steps: int | None = None
    #: which layers the coarse stages match: "all", or "matched" (those whose receptive field,
    #: scaled to the output, the full size has; see texsynth.multiscale)
    coarse_layers: str = "all"
    #: noise images the coarsest stage is run from; each output goes on from the one whose
    #: loss ends lowest (1: a plain run; see texsynth.multiscale)
    coarse_starts: int = 1

    def __post_init__(self) -> None:
        require_coarse_steps(self.coarse_steps)
        require_coarse_layers(self.coarse_layers)
        require_coarse_starts(self.coarse_starts)
        require_starts_have_a_stage(self.coarse_starts, self.coarse_levels)

    def loss_options(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.losses)


#: the scale-free recipe used with every backbone but the reference's: Gram matrices each
#: divided by their target's norm, the colour spectrum constraint averaged over pixels, and
#: L-BFGS with a strong-Wolfe line search (robust to the loss's overall scale).
RELATIVE_GRAM_AND_SPECTRUM: dict[str, dict[str, Any]] = {
    "gram": {"relative": True, "weight": 1.0},
    "spectrum": {"mode": "color", "reduction": "mean", "weight": 1.0},
}
#: added by a user to a scale-free recipe, these compare layer by layer as its Gram terms do:
#: each layer's term relative to its target's size. Absolute, the full-resolution layers
#: outweighed the rest and left coloured speckle (cracks, 128x128, weight-free: chroma distance
#: 0.016 -> 0.0016 for sliced_wasserstein, 0.012 -> 0.0018 for histogram; benchmarks/README.md,
#: "Other feature losses").
RELATIVE_LAYER_LOSSES: dict[str, dict[str, Any]] = {
    "sliced_wasserstein": {"relative": True},
    "histogram": {"relative": True},
}
#: random RGB filters put fine colour noise into every step, which Gram terms remove only
#: slowly: gray exemplars came out with pink/green speckle. The chroma constraint (x10 on a gray
#: exemplar, fading on colourful ones) removes it (README, When things go wrong).
RANDOM_FILTER_LOSSES: dict[str, dict[str, Any]] = {
    **RELATIVE_GRAM_AND_SPECTRUM,
    "chroma_spectrum": {"weight": 10.0},
}
#: tolerances off: the scale-free losses average over pixels, so near convergence their
#: gradients fall below torch's default tolerance_grad (1e-7) long before the texture stops
#: improving (and sooner at larger sizes); a run then lasts exactly its --steps.
#: loss_scale: torch's L-BFGS keeps a curvature pair only when y·s > 1e-10, an absolute
#: threshold. The scale-free losses fall to ~1e-7 late in a run, their pairs below it, and the
#: history froze: the optimizer crawled on stale curvature (blotchy_0075 stalled at q 1.038 for
#: its last 5 of 24 steps, keeping 1 pair in its last 4; scaled x1e4, every step kept its
#: pairs; with this scale, q 1.013 after 24 steps; benchmarks/README.md, "Frozen L-BFGS history").
#: A power of two, so scaling is exact.
LBFGS_WOLFE: dict[str, Any] = {**LBFGS_DEFAULTS, "line_search_fn": "strong_wolfe",
                               "tolerance_grad": 0.0, "tolerance_change": 0.0, "loss_scale": 2.0**14}

PRESETS: Registry[Preset] = Registry("preset")


def register_preset(preset: Preset, *, override: bool = False) -> Preset:
    PRESETS.add(preset.name, _constant(preset), override=override)
    return preset


def get_preset(name: str) -> Preset:
    return PRESETS.create(name)


def list_presets() -> list[str]:
    return PRESETS.names()


def _constant(preset: Preset) -> Callable[[], Preset]:
    def factory() -> Preset:
        return preset

    factory.__qualname__ = f"preset:{preset.name}"
    return factory


LIU2016 = register_preset(
    Preset(
        name="liu2016",
        description=(
            "Liu, Gousseau & Xia (2016) as in the reference implementation: VGG19 (ImageNet, "
            "average pooling, no input normalization), Gram/(4CHW) at conv1_1 and pool1-pool5 "
            "with weights 1e9, luminance spectrum loss x1e5, sigmoid-noise init, L-BFGS defaults, "
            "exemplar cropped and resized to 256x256"
        ),
        backbone="vgg19",
        backbone_options={"weights": "imagenet", "pooling": "avg", "normalize_input": False},
        losses={
            "gram": {
                "layers": ["conv1_1", "pool1", "pool2", "pool3", "pool4", "pool5"],
                "layer_weights": 1e9,
                "normalization": "4chw",
                "weight": 1.0,
            },
            "spectrum": {"mode": "luminance", "weight": 1e5},
        },
        init="sigmoid",
        exemplar_size=256,
    )
)

VGG19_DEFAULT = register_preset(
    Preset(
        name="vgg19",
        description=(
            "VGG19 with ImageNet weights and input normalization, average pooling; Gram "
            "(relu1_1, pool1-pool4) + colour spectrum constraint (Liu et al. 2016)"
        ),
        backbone="vgg19",
        backbone_options={"weights": "imagenet", "pooling": "avg"},
        lbfgs=LBFGS_WOLFE,
        losses=RELATIVE_GRAM_AND_SPECTRUM,
        loss_defaults=RELATIVE_LAYER_LOSSES,
    )
)

RANDOM_MULTISCALE = register_preset(
    Preset(
        name="random_multiscale",
        description=(
            "weight-free (Ustyuzhaninov et al. 2017, as in the paper): one layer of random "
            "filters with kernels 3-55, 128 each; per-scale relative Gram + colour spectrum + "
            "chroma spectrum x10 on gray exemplars; "
            "slow (large kernels)"
        ),
        backbone="random_multiscale",
        losses=RANDOM_FILTER_LOSSES,
        loss_defaults=RELATIVE_LAYER_LOSSES,
        lbfgs=LBFGS_WOLFE,
    )
)

WEIGHT_FREE = register_preset(
    Preset(
        name="weight_free",
        description=(
            "the offline default: random filter banks on a Gaussian pyramid (3x3, 7x7, 11x11 "
            "at full size, 11x11 at 1/2 and 1/4; 128 filters each), relative Gram per level + "
            "colour spectrum constraint (Liu et al. 2016) + chroma spectrum x10 on gray "
            "exemplars + a penalty on pixels outside the exemplar's range, L-BFGS with "
            "strong-Wolfe line search, start from the exemplar's mean colour; "
            "4 steps at half size first, without the coarsest level"
        ),
        backbone="random_pyramid",
        # the value range term: torch's L-BFGS has no bounds, and pixels pulled outside the
        # exemplar's range were clamped on saving, so the saved image was not the matched one
        # (chequered_0096: 18% of pixels); with it, lower colour distance in 19 of 22 runs, large
        # gains where pixels left the range (benchmarks/README.md, "Value range")
        losses={**RANDOM_FILTER_LOSSES, "value_range": {"weight": 1.0}},
        loss_defaults=RELATIVE_LAYER_LOSSES,
        lbfgs=LBFGS_WOLFE,
        # a nearly flat start lets colour regions form where the statistics want them; from
        # sigmoid noise an exemplar laid out across the image (blotchy_0025 at 256x256) ended
        # with them the wrong way round for 2 of 3 seeds, at the same medians otherwise
        # (benchmarks/README.md, "Seed 0 only")
        init="gaussian",
        # a warm start: 4 steps at half size put structure of the right sizes in place at a
        # quarter of the cost. Matched layers: at half size the coarsest level would see twice
        # the full size's widest window and copy scene-like exemplars' layout (all layers: copy
        # score higher on 9 of 11 DTD exemplars; matched: on 4, median level), while reaching
        # the reference recipe's final quality with 11x fewer evaluations on bubbly_0139, seed 0
        # (not with seed 1; benchmarks/README.md, "Matched coarse stages")
        coarse_levels=1,
        coarse_steps=4,
        coarse_layers="matched",
    )
)

#: the weight-free default with Gaussian statistics (means and covariances, compared by the
#: Wasserstein-2 distance: `mean_covariance`) in place of Gram matrices. On the 11 DTD exemplars
#: at 256x256 (the default 8 steps) the geometric mean of the four distances was lower on all 11
#: with seed 0 and with seed 1 (median 0.82x, 0.78x; the spectrum distance higher on 8), and
#: cracked earth kept its cracks connected where Gram terms break them into fragments
#: (benchmarks/README.md, "Other feature losses"). Not the default: it takes 1.39x the time,
#: and the speed measurements of the default were taken with Gram terms.
WEIGHT_FREE_W2 = register_preset(
    replace(
        WEIGHT_FREE,
        name="weight_free_w2",
        description=(
            "the weight_free preset with mean_covariance (Wasserstein-2 between Gaussian fits of "
            "each level's features) in place of its Gram terms: more connected cracks and "
            "networks, lower distances on the DTD exemplars measured; 1.4x the time"
        ),
        losses={"mean_covariance": {"weight": 1.0},
                **{name: options for name, options in WEIGHT_FREE.losses.items() if name != "gram"}},
    )
)
