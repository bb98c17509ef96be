"""Coarse-to-fine synthesis: optimize a smaller image first, upsample it, continue.

The "Init" strategy of Gonthier, Gousseau & Ladjal (2020): stage ``k`` of ``levels``
synthesizes at 1/2^k of the output size from the exemplar downscaled by the same factor,
starting from the previous (coarser) stage's result upsampled. The large-scale layout is
settled where evaluations cost 4^k times less, and the full-size optimization starts from an
image whose statistics are already nearly right. Any recipe works: each stage is an ordinary
:class:`~texsynth.TextureSynthesis` with the same backbone, losses and settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from texsynth._logging import log
from texsynth.errors import InvalidArgumentError


def require_coarse_steps(value: Any) -> None:
    """Coarse stages' step budget must be a positive integer (``None``: the run's steps)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidArgumentError(f"coarse steps must be a positive integer, got {value!r}")


def coarse_to_fine_start(
    module: Any,
    levels: int,
    steps: int,
    run: Callable[[Any, int], None],
    module_options: dict[str, Any],
) -> list[Any]:
    """Run ``levels`` coarser stages for ``module`` and start it from their result.

    ``run(stage, steps)`` fits one stage (the caller's Trainer settings); ``module_options``
    are the keyword options ``module`` was built with. Stages too small for the backbone are
    skipped. Returns the stage modules, coarsest first.
    """
    from texsynth.module import TextureSynthesis

    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 0:
        raise InvalidArgumentError(f"coarse levels must be a non-negative integer, got {levels!r}")
    options = {k: v for k, v in module_options.items() if k not in ("size", "exemplar_size", "init", "seed")}
    options["preset"] = module.preset  # resolved once (and reported once)
    height, width = module.output_size
    ex_h, ex_w = module.exemplar.shape[-2:]
    stages: list[Any] = []
    image: torch.Tensor | None = None
    for level in range(levels, 0, -1):
        factor = 2**level
        size = (max(1, round(height / factor)), max(1, round(width / factor)))
        ex_size = (max(1, round(ex_h / factor)), max(1, round(ex_w / factor)))
        exemplar = F.interpolate(module.exemplar.cpu(), size=ex_size, mode="bicubic", antialias=True,
                                 align_corners=False).clamp(0, 1)
        try:
            stage = TextureSynthesis(exemplar, size=size, exemplar_size=ex_size, seed=module.seed,
                                     init=module.init_kind, **options)
        except InvalidArgumentError as error:
            if "too small" not in str(error):
                raise
            log.info("coarse-to-fine: skipping 1/%d scale (%dx%d): too small for the backbone", factor, *size[::-1])
            continue
        if image is not None:
            stage.reset_image(image)
        run(stage, steps)
        image = stage.outputs()
        stages.append(stage)
    if image is not None:
        module.reset_image(image)
    return stages
