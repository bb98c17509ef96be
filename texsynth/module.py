"""The ``TextureSynthesis`` LightningModule: the image is the model.

Its only parameter is the output image. The backbone's weights are buffers, so no optimizer
can touch them and no weight gradient is ever computed. Optimization is manual: one
training step is one ``LBFGS.step(closure)`` (the reference's "epoch", up to ``max_iter``
loss evaluations), with ``zero_grad`` and ``manual_backward`` inside the closure as
Lightning documents for L-BFGS. Logging happens once per step, outside the closure, from
the last evaluation, so line-search probes are never logged and no extra evaluation is paid
for the progress bar.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import os
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from texsynth._logging import log
from texsynth.backbones import Backbone
from texsynth.config import yaml_safe
from texsynth.errors import CheckpointError, InvalidArgumentError, require_count, require_flag
from texsynth.features import FeatureExtractor
from texsynth.image_io import ImageSource, Size, center_crop_resize, load_image, parse_size, save_image
from texsynth.init import INITS, initial_image
from texsynth.losses.base import float32_statistics
from texsynth.memory import check_image_fits, check_memory, size_label
from texsynth.presets import LBFGS_DEFAULTS, Preset, list_presets, torch_lbfgs_options
from texsynth.recipe import LossSpec, resolve_recipe
from texsynth.tiling import (
    TilePlan,
    make_periodic,
    next_multiple,
    periodic_resize,
    plan_tile,
    resolve_tile,
    tile_targets_source,
)


#: True while coarse-to-fine synthesis builds its coarser stages: their notes on how the
#: exemplar's period fits would repeat the full size's, at sizes the user did not ask for
COARSE_STAGE: contextvars.ContextVar[bool] = contextvars.ContextVar("texsynth_coarse_stage", default=False)


class TextureSynthesis(L.LightningModule):
    """Optimize an image so its CNN statistics match an exemplar's.

    Args:
        exemplar: path, bundled example name, PIL image, array or tensor (RGB in [0, 1]).
        size: output size, ``N`` or ``(height, width)`` or ``"WxH"``; default: the
            (preprocessed) exemplar's size. With ``tile`` left to None, a periodic exemplar's
            output at a size that is no whole multiple of its period is the top-left crop of an
            image of the next multiple (``image_size``; :func:`texsynth.tiling.image_size_for`).
        exemplar_size: centre-crop and resize the exemplar to this size first (the
            reference used 256); default: the preset's choice, or as given.
        backbone: registered name or an ``nn.Module``; default: the preset's.
        backbone_options: keyword options for a named backbone.
        weights: weights source for a named backbone (``"imagenet"``, a path, ``None``).
        losses: mapping ``{name: weight or options}`` merged over the preset's losses
            (weight 0 drops one), or a sequence of names / ``TextureLoss`` objects that
            replaces them.
        preset: a recipe name (``liu2016``, ``vgg19``, ``random_multiscale``) or ``Preset``.
        seed: seeds the initial image; ``None`` draws one (recorded in ``hparams``).
        init: starting image (``sigmoid``, ``uniform``, ``gaussian``, ``random_phase``); default:
            the preset's (``gaussian`` for ``weight_free``, ``sigmoid`` for the others).
        lbfgs: ``torch.optim.LBFGS`` options over the preset's (lr, max_iter, history_size, …),
            and ``loss_scale``: L-BFGS minimizes the total loss times this factor (so the
            image's ``.grad`` is scaled too; logged losses are not). 2**14 in the strong-Wolfe
            presets, whose scale-free losses would otherwise fall below torch's absolute
            curvature threshold.
        variations: how many different textures to synthesize at once (a batch; each
            sample's losses are independent of the others').
        tile: make the output periodic (seamlessly tileable): circular padding in the
            backbone, the exemplar's periodic component in the spectrum constraint.
            ``None`` (default): only when the output is larger than the exemplar in either
            dimension, where border statistics framed the output otherwise
            (:func:`texsynth.tiling.resolve_tile`).
        checkpointing: gradient checkpointing of the backbone (recompute the activations
            between taps in the backward pass: less memory, about one more forward pass of
            time). ``None``: switched on when the run would not fit in the device's free
            memory otherwise (backbones that run their layers in sequence, e.g. VGG19).

    The L-BFGS history is bounded to about ``LBFGS_HISTORY_BUDGET`` bytes (at least 5
    steps) unless ``lbfgs`` sets ``history_size``: 100 steps of a 2048x2048 image would
    take 10 GB.
    """

    def __init__(
        self,
        exemplar: ImageSource,
        *,
        size: int | str | tuple[int, int] | None = None,
        exemplar_size: int | str | tuple[int, int] | None = None,
        backbone: str | nn.Module | None = None,
        backbone_options: Mapping[str, Any] | None = None,
        weights: Any = None,
        losses: LossSpec = None,
        preset: str | Preset | None = None,
        seed: int | None = None,
        init: str | None = None,
        lbfgs: Mapping[str, Any] | None = None,
        variations: int = 1,
        tile: bool | None = None,
        checkpointing: bool | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        from texsynth.examples import load_exemplar

        exemplar_tensor, self.exemplar_name = load_exemplar(exemplar)
        #: the exemplar's file, which no output may overwrite (None for examples, arrays, images)
        self.exemplar_file: Path | None = (Path(exemplar).resolve() if isinstance(exemplar, (str, os.PathLike))
                                           and Path(exemplar).is_file() else None)
        recipe = resolve_recipe(preset, backbone, backbone_options, weights, losses)
        self._backbone_given_as_module = isinstance(backbone, nn.Module)  # not rebuildable by name
        self.preset = recipe.preset
        self.backbone_name = recipe.backbone_name
        self.backbone_options = recipe.backbone_options

        prep = parse_size(exemplar_size, "exemplar_size") or parse_size(
            recipe.preset.exemplar_size, "exemplar_size"
        )
        if prep is not None:
            exemplar_tensor = center_crop_resize(exemplar_tensor, prep)
        self.output_size: Size = parse_size(size) or tuple(exemplar_tensor.shape[-2:])  # type: ignore[assignment]
        #: the optimized image's size: the output's, or a whole multiple of a periodic exemplar's
        #: of which the output is the top-left crop (:func:`texsynth.tiling.image_size_for`)
        # a coarse stage gets the full size's tile as resolved (a bool, never None): its image is its
        # size, and how the period fits was the full size's to tell
        plan = (TilePlan(self.output_size, None) if COARSE_STAGE.get()
                else plan_tile(tile, exemplar_tensor[0], self.output_size))
        self.image_size: Size = plan.image_size
        if plan.unfitting_period is not None:
            self._say_how_the_period_fits(plan.unfitting_period, tuple(exemplar_tensor.shape[-2:]))

        self.tile = resolve_tile(tile, tuple(exemplar_tensor.shape[-2:]), self.image_size)
        if self.tile:
            make_periodic(recipe.backbone, recipe.losses.values())
        self.loss_terms = nn.ModuleDict(recipe.losses)
        layers = list(dict.fromkeys(l for loss in recipe.losses.values() for l in loss.layers))
        self.backbone = recipe.backbone
        self.extractor: FeatureExtractor | None = None
        if layers:
            if isinstance(self.backbone, Backbone):
                self.backbone.check_layers(layers)
                self.backbone.prune(layers)
                _check_min_size(self.backbone.min_size(layers), exemplar_tensor.shape[-2:], "exemplar")
                _check_min_size(self.backbone.min_size(layers), self.output_size, "output size")
            self.extractor = FeatureExtractor(self.backbone, layers)
        self.checkpointing = require_flag(checkpointing, "checkpointing", none_means="only when memory is short")
        if checkpointing:
            if self.extractor is None:
                raise InvalidArgumentError("checkpointing=True needs a backbone (no feature loss is used)")
            self.extractor.enable_checkpointing()

        self.variations = require_count(variations, "variations")
        check_image_fits(self.output_size, variations, self.image_size)
        self.init_kind = init or recipe.preset.init
        if self.init_kind not in INITS:
            raise InvalidArgumentError(f"unknown init {self.init_kind!r}; known: {', '.join(INITS)}")
        if lbfgs is not None and not isinstance(lbfgs, Mapping):
            raise InvalidArgumentError(f"lbfgs must be a mapping of L-BFGS options, got {type(lbfgs).__name__}")
        self.lbfgs_options = {**LBFGS_DEFAULTS, **recipe.preset.lbfgs, **(lbfgs or {})}
        _check_lbfgs(self.lbfgs_options)
        if "history_size" not in (lbfgs or {}):
            height, width = self.image_size
            self.lbfgs_options["history_size"] = bounded_history(self.lbfgs_options["history_size"],
                                                                 variations * 3 * height * width,
                                                                 size_label(self.image_size, variations))
        if seed is None:  # drawn, and recorded in hparams so the run can be repeated
            seed = random.SystemRandom().randrange(2**31)
        self.seed = require_count(seed, "seed", minimum=0)
        self._generator = torch.Generator().manual_seed(self.seed)

        self.register_buffer("exemplar", exemplar_tensor, persistent=False)
        #: an exemplar without colour (a grayscale file): outputs come out without colour too
        self.gray_exemplar = bool((exemplar_tensor[:, :1] == exemplar_tensor).all())
        self.exemplar_digest = hashlib.sha256(exemplar_tensor.numpy().tobytes()).hexdigest()[:16]
        self.image = nn.Parameter(self._new_image())
        self._optimizer: torch.optim.LBFGS | None = None
        self._warning_filter: tuple[Any, ...] | None = None  # see _hide_frozen_backbone_warning
        self._targets_device: torch.device | None = None
        self.num_evals = 0
        self.num_steps = 0
        self.diverged = False
        self.stalled = False  # set by callbacks.StopWhenStalled
        self.stopped_before_copying = False  # set by callbacks.StopBeforeCopying
        self.copy_score: float | None = None  # likewise: the output's last measured copy score
        self.interrupted: str | None = None
        self.register_buffer("_last_good_image", self.image.detach().clone(), persistent=False)
        self.loss_history: list[float] = []
        self.last_losses: dict[str, torch.Tensor] = {}
        # Lightning compares the dict with every __init__ argument (==), which a numpy exemplar
        # answers elementwise ("truth value of an array is ambiguous"); it is loaded by now
        exemplar = self.exemplar_name
        self.save_hyperparameters(self.describe(), logger=True)

    # ------------------------------------------------------------------ configuration
    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary of the run's settings (logged as hyper-parameters)."""
        return {
            "exemplar": self.exemplar_name,
            "exemplar_sha256_16": self.exemplar_digest,
            "exemplar_size": list(self.exemplar.shape[-2:]),
            "size": list(self.output_size),
            **({"image_size": list(self.image_size)} if self.image_size != self.output_size else {}),
            "preset": self.preset.name,
            "backbone": self.backbone_name,
            "losses": {name: loss_config(loss) for name, loss in self.loss_terms.items()},
            "init": self.init_kind,
            "seed": self.seed,
            "variations": self.variations,
            "tile": self.tile,
            "lbfgs": dict(self.lbfgs_options),
        }

    @property
    def tile_option(self) -> bool | None:
        """The ``tile`` argument that builds this module again: as resolved, except for an output
        cut from a larger tile, which only the default (None) makes."""
        return None if self.image_size != self.output_size else self.tile

    def outcome(self) -> dict[str, Any]:
        """How the last run ended, as the CLI summary and the batch manifest report it."""
        return {"diverged": self.diverged, "stalled": self.stalled,
                "stopped_before_copying": self.stopped_before_copying, "copy_score": self.copy_score}

    # ------------------------------------------------------------------ image state
    def _new_image(self) -> torch.Tensor:
        shape = (self.variations, 3, *self.image_size)
        return initial_image(self.init_kind, shape, self._generator, self.exemplar)

    def reset_image(self, image: ImageSource | None = None) -> None:
        """Start again from fresh noise, or from ``image`` (a tensor, array, PIL image or path,
        e.g. a coarser scale's result; resized to ``image_size``, wrapping around if the output
        is a tile), and forget the L-BFGS state."""
        if image is None:
            image = self._new_image()
        else:
            image = image if isinstance(image, torch.Tensor) else load_image(image, "starting image")
            image = image.detach().float().cpu()
            image = image.unsqueeze(0) if image.dim() == 3 else image
            if image.dim() != 4 or image.shape[1] != 3 or image.shape[0] not in (1, self.variations):
                raise InvalidArgumentError(
                    f"starting image must be (3, H, W) or ({self.variations}, 3, H, W), got {tuple(image.shape)}")
            if tuple(image.shape[-2:]) != tuple(self.image_size):
                image = (periodic_resize(image, self.image_size) if self.tile else
                         F.interpolate(image, size=self.image_size, mode="bicubic", align_corners=False))
            image = image.expand(self.variations, -1, -1, -1)
        with torch.no_grad():
            self.image.copy_(image.to(self.image.device))
        self._optimizer = None
        self.diverged = False

    def _recover_from_divergence(self, total: float) -> None:
        """A NaN/Inf loss or image: put the last good image back and stop the run."""
        with torch.no_grad():
            self.image.copy_(self._last_good_image)
        self._optimizer = None  # its curvature history is poisoned
        self.diverged = True
        self.trainer.should_stop = True
        log.warning(
            "optimization diverged at step %d (loss %s); stopped and restored the image of "
            "step %d. Lower the loss weights or the L-BFGS lr, or check custom losses.",
            self.num_steps + 1, total, self.num_steps,
        )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load as ``nn.Module`` does; the loaded image is then the one a divergence or an
        undone step goes back to (``load_from_checkpoint`` and a Trainer's resume both land here)."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        with torch.no_grad():
            self._last_good_image.copy_(self.image)
        return result

    def undo_step(self) -> None:
        """Put back the image the last step started from and forget that step.

        Its L-BFGS curvature pairs go too (they describe the undone move), so a later step
        starts the optimizer afresh from the restored image.
        """
        if self.num_steps == 0:
            raise RuntimeError("no step to undo")
        with torch.no_grad():
            self.image.copy_(self._last_good_image)
        if self._optimizer is not None:
            self._optimizer.state.clear()
        self.num_steps -= 1
        self.loss_history.pop()

    def output(self, index: int = 0) -> torch.Tensor:
        """Result ``index`` as a ``(3, H, W)`` tensor clipped to [0, 1], on the CPU."""
        return self.outputs()[index]

    def outputs(self) -> torch.Tensor:
        """All variations as a ``(variations, 3, H, W)`` tensor clipped to [0, 1], on the CPU
        (of the output size: the top-left crop of a larger image, see ``image_size``; gray, its
        channels' mean, when the exemplar is gray)."""
        images = self.output_region()
        if self.gray_exemplar:  # its faint colour is optimization noise, not texture
            images = images.mean(dim=1, keepdim=True).expand_as(images)
        return images.clamp(0, 1).cpu()

    def output_region(self) -> torch.Tensor:
        """The optimized images where they are delivered, on their device: all of them, or the
        top-left crop of the output size (see ``image_size``)."""
        height, width = self.output_size
        return self.image.detach()[..., :height, :width]

    def output_paths(self, path: str | os.PathLike) -> list[Path]:
        """Where :meth:`save_outputs` writes: ``path``, or ``stem_0`` … ``stem_{K-1}`` for
        variations. Refuses the exemplar's own file: an input is never overwritten."""
        path = Path(path)
        paths = ([path] if self.variations == 1 else
                 [path.with_name(f"{path.stem}_{index}{path.suffix}") for index in range(self.variations)])
        for target in paths:
            self.refuse_exemplar_file(target)
        return paths

    def refuse_exemplar_file(self, path: str | os.PathLike, label: str = "") -> None:
        """Any file texsynth is about to write (image, checkpoint) must not be the exemplar's."""
        if self.exemplar_file is not None and Path(path).resolve() == self.exemplar_file:
            raise InvalidArgumentError(f"{label}{path} is the exemplar itself; refusing to overwrite it")

    def save_outputs(self, path: str | os.PathLike) -> list[Path]:
        """Save the image (atomically); variations go to ``stem_0.png`` … ``stem_{K-1}.png``."""
        return [save_image(image, target) for image, target in zip(self.outputs(), self.output_paths(path))]

    # ------------------------------------------------------------------ checkpoints
    #: settings that must agree between a checkpoint and the run resuming from it.
    RESUME_KEYS = ("exemplar_sha256_16", "exemplar_size", "size", "image_size", "backbone", "losses", "variations",
                   "tile", "lbfgs")

    def _say_how_the_period_fits(self, period: tuple[int, int], exemplar_size: tuple[int, int]) -> None:
        """One line where a periodic exemplar's period does not divide the output: it is cut from a
        larger tile, or, a tile of its size asked for, its rows may break."""
        output, period_text, fitting = (f"{width}x{height}" for height, width in
                                        (self.output_size, period, next_multiple(self.output_size, period)))
        # a period of the exemplar's own size: it repeats at shifts that do not divide it (chequered_0096)
        unit = f"its size {period_text}" if tuple(period) == exemplar_size else f"its period {period_text}"
        if self.image_size != self.output_size:
            log.info("exemplar %s repeats itself and %s is not a whole multiple of %s: optimizing a %s tile and "
                     "cropping it (a tile of the size asked for breaks its rows; tile=True makes one anyway)",
                     self.exemplar_name, output, unit, fitting)
        else:
            log.warning("tile=True: exemplar %s repeats itself and %s is not a whole multiple of %s: its rows may "
                        "break (a %s tile would fit; with tile left unset, a larger output is cut from one)",
                        self.exemplar_name, output, unit, fitting)

    def rebuild_options(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Keyword arguments that build this module again around its exemplar (as
        :meth:`load_from_checkpoint` does), and those it cannot give, with why: a backbone or
        losses given as objects have no name to build them from."""
        options = {
            "size": list(self.output_size),
            "exemplar_size": list(self.exemplar.shape[-2:]),  # as stored: no preset resizes it again
            "backbone": self.backbone_name,
            "backbone_options": self.backbone_options,  # weights included
            "losses": [list(getattr(loss, "spec", ())) for loss in self.loss_terms.values()],
            "preset": self.preset.name,
            "seed": self.seed,
            "init": self.init_kind,
            "lbfgs": self.lbfgs_options,
            "variations": self.variations,
            "tile": self.tile_option,
            "checkpointing": self.checkpointing,
        }
        missing = {}
        if self.preset.name not in list_presets():  # made up for a backbone module, or an object
            del options["preset"]  # every setting it would give is given above
        if self._backbone_given_as_module:
            missing["backbone"] = "its backbone was given as a module"
            del options["backbone"], options["backbone_options"]
        unnamed = [name for name, loss in self.loss_terms.items() if getattr(loss, "spec", None) is None]
        if unnamed:
            missing["losses"] = f"its loss {unnamed[0]!r} was given as an object"
            del options["losses"]
        return yaml_safe(options), missing

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | os.PathLike, map_location: str | torch.device | None = None, **overrides: Any,
    ) -> TextureSynthesis:
        """The module of a texsynth checkpoint, with its image and step counts; the exemplar
        and the settings come from the checkpoint, ``overrides`` (any ``__init__`` keyword,
        ``exemplar`` too) replace them. Lightning's own would call ``__init__`` with the
        logged hyper-parameters, a summary that cannot build it. To continue the run with its
        L-BFGS state, use ``Trainer.fit(module, ckpt_path=...)`` or ``synthesize(resume=...)``."""
        from texsynth.checkpointing import load_checkpointed_module

        return load_checkpointed_module(cls, checkpoint_path, map_location, overrides)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rebuild, missing = self.rebuild_options()
        checkpoint["texsynth"] = {
            "exemplar": self.exemplar.detach().cpu(),
            "exemplar_name": self.exemplar_name,
            "exemplar_file": str(self.exemplar_file) if self.exemplar_file is not None else None,
            "rebuild": rebuild,
            "rebuild_missing": missing,
            "settings": self.describe(),
            "num_evals": self.num_evals,
            "num_steps": self.num_steps,
            "loss_history": list(self.loss_history),
            "generator_state": self._generator.get_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("texsynth")
        if saved is None:
            raise CheckpointError("checkpoint was not written by texsynth (no 'texsynth' entry)")
        ours = self.describe()
        different = [difference for key in self.RESUME_KEYS
                     if (difference := setting_difference(key, saved["settings"].get(key), ours.get(key)))]
        if different:
            key, was, now = different[0]
            raise CheckpointError(
                f"checkpoint is for different settings: {key} was {was!r}, "
                f"now {now!r}" + (f" (and {len(different) - 1} more)" if len(different) > 1 else "")
            )
        self.num_evals = saved["num_evals"]
        self.num_steps = saved["num_steps"]
        self.loss_history = list(saved["loss_history"])
        self._generator.set_state(saved["generator_state"])
        self._targets_device = None

    # ------------------------------------------------------------------ losses
    def _ensure_targets(self) -> None:
        device = self.image.device
        if self._targets_device == device:
            return
        with torch.no_grad():
            exemplar = self.exemplar.to(device)
            # circular padding would make the jumps across the exemplar's borders a target (tiling.py)
            features = self._features(tile_targets_source(exemplar) if self.tile else exemplar)
            for loss in self.loss_terms.values():
                loss.set_target(exemplar, features, self.image_size)
        self._targets_device = device

    def _features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.extractor(image) if self.extractor is not None else {}

    def compute_losses(self, image: ImageSource | None = None) -> dict[str, torch.Tensor]:
        """Each weighted loss term as it enters the total, plus ``"total"``.

        Works on any image or batch of the output size (default: the current one; an array,
        PIL image or path is loaded first); a batch's terms are sums over its samples.
        Differentiable.
        """
        if image is None:
            image = self.image
        else:
            image = self._image_to_measure(image)
        self._ensure_targets()
        features = self._features(image)
        # mixed precision: the backbone in bfloat16, every loss's statistics in float32
        with float32_statistics(image.device):
            terms = {name: loss.weight * loss(image, features) for name, loss in self.loss_terms.items()}
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    def _image_to_measure(self, image: ImageSource) -> torch.Tensor:
        """A caller's image for :meth:`compute_losses`, refused in one line when it is not a
        batch of RGB images of the output size (the spectrum terms compare whole spectra; the
        error used to come from inside a loss, about "target spectrum" shapes)."""
        if not isinstance(image, torch.Tensor):
            image = load_image(image, "image").to(self.image.device)
        elif image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[1] != 3:
            raise InvalidArgumentError(f"compute_losses: image must be (3, H, W) or (B, 3, H, W), got "
                                       f"{tuple(image.shape)}")
        if tuple(image.shape[-2:]) != tuple(self.image_size):
            (height, width), (out_height, out_width) = image.shape[-2:], self.image_size
            what = "the output size" if self.image_size == self.output_size else "the optimized image's size"
            raise InvalidArgumentError(f"compute_losses: image is {width}x{height}, {what} is "
                                       f"{out_width}x{out_height}; resize it first")
        return image

    # ------------------------------------------------------------------ Lightning hooks
    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Reusing the optimizer keeps L-BFGS history across fits (``optimize`` continues).
        if self._optimizer is None or self._optimizer.param_groups[0]["params"][0] is not self.image:
            self._optimizer = torch.optim.LBFGS([self.image], **torch_lbfgs_options(self.lbfgs_options))
        return self._optimizer

    def train_dataloader(self) -> range:
        # Batches carry nothing: the image is the model. One batch is one L-BFGS step.
        return range(max(int(self.trainer.max_steps), 1))

    def on_fit_start(self) -> None:
        if self.image.dtype in (torch.float16, torch.bfloat16):  # a Trainer with a "-true" 16-bit precision
            raise InvalidArgumentError(
                f"precision {self.trainer.precision!r} stores the image in {self.image.dtype}, too coarse for "
                f"L-BFGS's steps; use bf16-mixed or 16-mixed (the image and losses stay float32)")
        check_memory(self, self.image.device, allow_checkpointing=self.checkpointing is None)
        self._ensure_targets()
        self._hide_frozen_backbone_warning()

    def on_train_start(self) -> None:
        self._restore_warning_filters()

    def teardown(self, stage: str) -> None:
        self._restore_warning_filters()

    def _hide_frozen_backbone_warning(self) -> None:
        """Silence Lightning's "module(s) in eval mode" warning for this fit when the frozen
        backbone is all it would count: that backbone is in eval mode on purpose. Any other
        module in eval mode changes the count, and the warning shows. (A fit that fails before
        ``on_train_start`` leaves the filter in place until this module's next fit: Lightning calls
        no module hook on a failure.)"""
        self._restore_warning_filters()
        in_eval = sum(not module.training for module in self.modules())
        if in_eval and in_eval == sum(not module.training for module in self.backbone.modules()):
            message = re.escape(f"Found {in_eval} module(s) in eval mode at the start of training.")
            warnings.filterwarnings("ignore", message=message, category=PossibleUserWarning)
            self._warning_filter = warnings.filters[0]

    def _restore_warning_filters(self) -> None:
        entry, self._warning_filter = self._warning_filter, None
        if entry is not None and entry in warnings.filters:
            warnings.filters.remove(entry)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self.diverged:  # a diverged run stops; a later fit must call reset_image()
            self.trainer.should_stop = True
            return
        optimizer = self.optimizers()
        self._last_good_image.copy_(self.image.detach())
        for loss in self.loss_terms.values():
            loss.start_step()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            terms = self.compute_losses()
            self.num_evals += 1
            # outside autocast, as torch advises: the statistics' backward stays float32 (the
            # bfloat16 backbone's backward stays bfloat16, its tensors are)
            objective = terms["total"] * self.lbfgs_options["loss_scale"]
            with float32_statistics(self.image.device):
                self.manual_backward(objective)
            # L-BFGS reads the loss on the host right after the closure anyway.
            if not torch.isfinite(terms["total"]):
                raise _Diverged(float(terms["total"].detach()))
            self.last_losses = {name: value.detach() for name, value in terms.items()}
            return objective

        try:
            optimizer.step(closure=closure)
        except _Diverged as diverged:
            self._recover_from_divergence(diverged.value)
            return
        total = float(self.last_losses["total"])
        if not bool(torch.isfinite(self.image).all()):
            self._recover_from_divergence(total)
            return
        self.num_steps += 1
        self.loss_history.append(total)
        for name, value in self.last_losses.items():
            self.log(f"loss/{name}", value, on_step=True, on_epoch=False)
        self.log("loss", total, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        self.log("evals", float(self.num_evals), on_step=True, on_epoch=False)



class _Diverged(Exception):
    """Raised inside the L-BFGS closure on a NaN/Inf loss, to leave the step at once."""

    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.value = value


#: bytes the L-BFGS curvature history may take (two image-sized vectors per step)
LBFGS_HISTORY_BUDGET = 1024**3
MIN_HISTORY = 5


def bounded_history(history_size: int, numel: int, size: str = "this output size") -> int:
    """The L-BFGS history that fits ``LBFGS_HISTORY_BUDGET`` for an image of ``numel`` floats."""
    fits = LBFGS_HISTORY_BUDGET // (2 * numel * 4)
    bounded = max(MIN_HISTORY, min(history_size, fits))
    if bounded < history_size:
        log.info("L-BFGS history bounded to %d steps for %s (set lbfgs history_size to choose)", bounded, size)
    return bounded


def _check_min_size(minimum: int, size: Any, what: str) -> None:
    height, width = (int(v) for v in size)
    if min(height, width) < minimum:
        raise InvalidArgumentError(
            f"{what} {width}x{height} is too small for the chosen backbone layers: "
            f"each side must be at least {minimum} pixels"
        )


def _check_lbfgs(options: Mapping[str, Any]) -> None:
    allowed = set(LBFGS_DEFAULTS) | {"max_eval"}
    unknown = set(options) - allowed
    if unknown:
        raise InvalidArgumentError(f"unknown L-BFGS option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    for key in ("max_iter", "history_size"):
        value = options[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(f"L-BFGS {key} must be a positive integer, got {value!r}")
    for key in ("lr", "loss_scale"):
        value = options[key]
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value) or value <= 0:
            raise InvalidArgumentError(f"L-BFGS {key} must be a positive number, got {value!r}")
    if options["line_search_fn"] not in (None, "strong_wolfe"):
        raise InvalidArgumentError(
            f"L-BFGS line_search_fn must be None or 'strong_wolfe', got {options['line_search_fn']!r}"
        )


def loss_config(loss: nn.Module) -> dict[str, Any]:
    """How a loss was made, as compared when resuming: its registry name and every option it
    was built with; for a loss passed as an object, its type and the attributes that shape it
    (the built-in losses' and those its class names in ``option_attributes``)."""
    spec = getattr(loss, "spec", None)
    if spec is not None:
        name, options = spec
        return {"name": name, **yaml_safe(options), "weight": getattr(loss, "weight", None)}
    config: dict[str, Any] = {"type": type(loss).__name__, "weight": getattr(loss, "weight", None)}
    for key in dict.fromkeys((*LOSS_OBJECT_OPTIONS, *getattr(loss, "option_attributes", ()))):
        if hasattr(loss, key):
            config[key] = yaml_safe(getattr(loss, key))
    return config


#: attributes of the built-in losses that hold their options (not state computed from the
#: exemplar, such as layer scales, nor ``periodic``, which ``tile`` sets): what a loss passed as
#: an object is recorded and compared by
LOSS_OBJECT_OPTIONS = ("layers", "layer_weights", "normalization", "relative", "mode", "num_directions", "resample",
                       "seed", "upsample", "reduction", "eps", "gray_level", "match_exemplar", "fixed_bounds")


def setting_difference(key: str, was: Any, now: Any) -> tuple[str, Any, Any] | None:
    """How a checkpoint's setting ``key`` differs from this run's, as (what, was, now), or None.

    Losses are compared one by one, and a difference names the loss and its option. A loss
    object's config is compared on the attributes the checkpoint recorded: texsynth recorded
    fewer of them before."""
    if key != "losses" or not (isinstance(was, Mapping) and isinstance(now, Mapping)):
        return None if was == now else (key, was, now)
    if was.keys() != now.keys():
        return "losses", sorted(was), sorted(now)
    for name, config in was.items():
        mine = now[name]
        objects = "type" in config and "type" in mine
        absent = None if objects else _ABSENT  # a loss made by name: an option left out differs from any value
        for option in (config if objects else {**config, **mine}):
            if config.get(option, absent) != mine.get(option, absent):
                return f"loss {name!r} {option}", config.get(option, "(not set)"), mine.get(option, "(not set)")
    return None


_ABSENT = object()
