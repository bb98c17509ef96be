"""Coarse-to-fine synthesis: optimize a smaller image first, upsample it, continue.

The "Init" strategy of Gonthier, Gousseau & Ladjal (2020): stage ``k`` of ``levels``
synthesizes at 1/2^k of the output size from the exemplar downscaled by the same factor,
starting from the previous (coarser) stage's result upsampled. The large-scale layout is
settled where evaluations cost 4^k times less, and the full-size optimization starts from an
image whose statistics are already nearly right. Any recipe works: each stage is an ordinary
:class:`~texsynth.TextureSynthesis` with the same backbone, losses and settings.

Which layers a stage matches (``layers``): ``"all"`` keeps every layer of the full size. A
layer at 1/2^k of the size sees a window 2^k times wider in output pixels, so the deepest
layers then constrain structure larger than anything the full size constrains, and a stage run
long enough settles (copies) the exemplar's layout. ``"matched"`` keeps, per loss, only the
layers whose window, so scaled, is no wider than the widest that loss uses at full size (the
backbone's ``receptive_field``): the stage forms the full size's large structure at a quarter
of the cost without adding larger-scale constraints (benchmarks/README.md, "Matched coarse
stages").

Several starts (``starts``): the coarsest stage is run from that many noise images and each
output continues from the one whose loss ends lowest. Which basin a run settles in is decided
early, and the coarse stage's loss predicts it at a fraction of a full-size step's cost
(benchmarks/README.md, "Several starts").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from texsynth._logging import log
from texsynth.backbones.base import Backbone
from texsynth.errors import InvalidArgumentError, require_count
from texsynth.losses.layered import LayeredLoss

#: what the coarse stages match: every layer of the full size, or the layers whose window,
#: scaled to the output, the full size has
COARSE_LAYERS = ("all", "matched")


def _require_positive_count(value: Any, what: str) -> None:
    if value is not None:
        require_count(value, what)


def require_coarse_steps(value: Any) -> None:
    """Coarse stages' step budget must be a positive integer (``None``: the run's steps)."""
    _require_positive_count(value, "coarse steps")


def require_coarse_starts(value: Any) -> None:
    """The number of coarse starts must be a positive integer (``None``: the preset's)."""
    _require_positive_count(value, "coarse starts")


def require_starts_have_a_stage(starts: int | None, levels: int) -> None:
    """Several starts are several runs of the coarsest stage: without one they cannot happen."""
    if starts is not None and starts > 1 and not levels:
        raise InvalidArgumentError(f"coarse starts ({starts}) need a coarse stage; set coarse levels >= 1")


def require_coarse_layers(value: Any) -> None:
    if value is not None and value not in COARSE_LAYERS:
        raise InvalidArgumentError(f"coarse layers must be one of {', '.join(COARSE_LAYERS)}, got {value!r}")


@dataclass(frozen=True)
class CoarseSchedule:
    """The coarse stages a run does before its full size, each setting the call's or the preset's.

    Resolved once, in :func:`~texsynth.synthesize`, so that what ran and what a run's config
    file records cannot disagree.
    """

    levels: int
    steps: int | None  # None: as many as the full-size run
    layers: str
    starts: int = 1  # noise images the coarsest stage is run from (the best one continues)

    @classmethod
    def resolve(cls, preset: Any, levels: int | None = None, steps: int | None = None,
                layers: str | None = None, starts: int | None = None) -> CoarseSchedule:
        """``preset``'s schedule with the given (not None) settings in place of its own.

        Several starts asked for without a coarse stage are refused; a preset's several starts
        lapse to one when the call turns its coarse stage off, so the schedule says what runs.
        """
        require_coarse_steps(steps)
        require_coarse_layers(layers)
        require_coarse_starts(starts)
        levels = preset.coarse_levels if levels is None else levels
        require_starts_have_a_stage(starts, levels)
        if starts is None:
            starts = preset.coarse_starts if levels else 1
        return cls(levels=levels,
                   steps=preset.coarse_steps if steps is None else steps,
                   layers=preset.coarse_layers if layers is None else layers,
                   starts=starts)

    def steps_per_stage(self, full_steps: int) -> int:
        return full_steps if self.steps is None else self.steps


def matched_losses(module: Any, factor: int) -> list[tuple[str, dict[str, Any]]] | None:
    """``module``'s losses for a stage at 1/``factor`` of its size, layers matched to the full size.

    Each layered loss keeps the layers whose receptive field times ``factor`` is no wider than
    its widest layer's (at least its finest ones). None when that cannot be decided: a loss
    passed as an object, or a backbone that does not know its receptive fields.
    """
    backbone = module.backbone
    specs = []
    for loss in module.loss_terms.values():
        spec = getattr(loss, "spec", None)
        if spec is None:
            return None
        name, options = spec[0], dict(spec[1])
        if isinstance(loss, LayeredLoss):
            fields = [backbone.receptive_field(layer) if isinstance(backbone, Backbone) else None
                      for layer in loss.layers]
            if any(field is None for field in fields):
                return None
            kept = [layer for layer, field in zip(loss.layers, fields) if field * factor <= max(fields)]
            kept = kept or [layer for layer, field in zip(loss.layers, fields) if field == min(fields)]
            options["layers"] = kept
            options["layer_weights"] = {layer: loss.layer_weights[layer] for layer in kept}
        specs.append((name, options))
    return specs


def coarse_to_fine_start(
    module: Any,
    levels: int,
    steps: int,
    run: Callable[[Any, int], None],
    module_options: dict[str, Any],
    layers: str = "all",
    starts: int = 1,
) -> list[Any]:
    """Run ``levels`` coarser stages for ``module`` and start it from their result.

    ``run(stage, steps)`` fits one stage (the caller's Trainer settings); ``module_options``
    are the keyword options ``module`` was built with; ``layers`` is one of
    :data:`COARSE_LAYERS` (module docstring); the coarsest stage is run from ``starts``
    noise images (:func:`start_seed`), and each variation goes on from the one whose loss
    ended lowest. Stages too small for the backbone are skipped.
    Returns the stage modules, coarsest first (of the starts, the one with the lowest loss).
    """
    from texsynth.module import COARSE_STAGE, TextureSynthesis

    require_count(levels, "coarse levels", minimum=0)
    require_coarse_layers(layers)
    require_coarse_starts(starts)
    options = {k: v for k, v in module_options.items() if k not in ("size", "exemplar_size", "init", "seed")}
    options["preset"] = module.preset  # resolved once (and reported once)
    options["tile"] = module.tile  # as resolved for the full size (auto: larger than the exemplar)
    height, width = module.image_size
    ex_h, ex_w = module.exemplar.shape[-2:]
    stages: list[Any] = []
    image: torch.Tensor | None = None
    for level in range(levels, 0, -1):
        factor = 2**level
        size = (max(1, round(height / factor)), max(1, round(width / factor)))
        ex_size = (max(1, round(ex_h / factor)), max(1, round(ex_w / factor)))
        exemplar = F.interpolate(module.exemplar.cpu(), size=ex_size, mode="bicubic", antialias=True,
                                 align_corners=False).clamp(0, 1)
        stage_options = dict(options)
        if layers == "matched":
            losses = matched_losses(module, factor)
            if losses is None:
                log.info("coarse-to-fine: the backbone's receptive fields or a loss's options are unknown; "
                         "the 1/%d stage keeps every layer", factor)
            else:
                stage_options["losses"] = losses
        first = image is None

        def new_stage(seed: int) -> Any:
            building = COARSE_STAGE.set(True)
            try:
                return TextureSynthesis(exemplar, size=size, exemplar_size=ex_size, seed=seed,
                                        init=module.init_kind, **stage_options)
            finally:
                COARSE_STAGE.reset(building)

        try:
            stage = new_stage(module.seed)
        except InvalidArgumentError as error:
            if "too small" not in str(error):
                raise
            log.info("coarse-to-fine: skipping 1/%d scale (%dx%d): too small for the backbone", factor, *size[::-1])
            continue
        if first and starts > 1:
            stage, image = _best_of_starts(stage, starts, steps, run,
                                           lambda index: new_stage(start_seed(module.seed, index)))
        else:
            if image is not None:
                stage.reset_image(image)
            run(stage, steps)
            image = stage.outputs()
        stages.append(stage)
    if image is not None:
        module.reset_image(image)
    return stages


def start_seed(seed: int, index: int) -> int:
    """Seed of the coarsest stage's ``index``-th start: 0 is ``seed`` itself (one start is
    the plain run); the others are spread far apart, so that neighbouring seeds' runs do not
    share starts."""
    return (seed + index * 2_654_435_761) % 2**31


def variation_losses(stage: Any) -> torch.Tensor:
    """``stage``'s total loss for each of its variations (losses treat them independently)."""
    with torch.no_grad():
        return torch.tensor([float(stage.compute_losses(stage.image[i:i + 1])["total"])
                             for i in range(stage.variations)])


def best_per_variation(losses: list[torch.Tensor], images: list[torch.Tensor]) -> torch.Tensor:
    """For each variation, its image from the start whose loss for it is lowest."""
    chosen = torch.stack(losses).argmin(dim=0).tolist()
    log.info("coarse-to-fine: start losses %s; chosen per variation %s",
             [[f"{value:.3g}" for value in row.tolist()] for row in losses], chosen)
    return torch.stack([images[start][variation] for variation, start in enumerate(chosen)])


def _best_of_starts(first: Any, starts: int, steps: int, run: Callable[[Any, int], None],
                    make_start: Callable[[int], Any]) -> tuple[Any, torch.Tensor]:
    """Run ``first`` and ``starts - 1`` more starts one after another, keeping only their
    images and losses (a stage's L-BFGS history can hold gigabytes); return the start with the
    lowest total loss and the best image per variation."""
    losses, images = [], []
    best, best_total = first, math.inf
    for index in range(starts):
        candidate = first if index == 0 else make_start(index)
        run(candidate, steps)
        losses.append(variation_losses(candidate))
        images.append(candidate.outputs())
        total = float(losses[-1].sum())
        if total < best_total:
            best, best_total = candidate, total
    return best, best_per_variation(losses, images)
