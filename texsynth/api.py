"""High-level entry points: ``synthesize`` for research code, and the reference's class API."""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from texsynth._logging import log
from texsynth.callbacks import stopping_callbacks
from texsynth.checkpointing import SaveAndInterrupt, check_resumable
from texsynth.errors import (CheckpointError, InvalidArgumentError, require_count, require_flag,
                             require_known_options, require_path, torch_load_failure)
from texsynth.image_io import (ImageSource, output_format, require_folder_accepts_files, require_writable_folder,
                               save_image, to_pil)
from texsynth.memory import check_memory
from texsynth.module import TextureSynthesis
from texsynth.multiscale import (CoarseSchedule, coarse_to_fine_start, require_coarse_layers, require_coarse_starts,
                                 require_coarse_steps)
from texsynth.presets import DEFAULT_STEPS, LBFGS_DEFAULTS
from texsynth.trainer import DEFAULT_LOGDIR, make_trainer, one_device, planned_device, resolve_cpu_precision

_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
#: options of ``synthesize`` that ``batch`` sets for every item itself
BATCH_SETS = ("progress_bar", "quiet", "checkpoint", "resume", "image_path")


def require_synthesis_options(options: dict[str, Any], caller: str, batch: bool = False) -> None:
    """Refuse an option that :class:`TextureSynthesis` (and, for ``batch``, ``synthesize``)
    does not take, naming ``caller``: an L-BFGS setting given on its own (``max_iter=5``)
    is the usual slip."""
    accepted = {*inspect.signature(TextureSynthesis.__init__).parameters, *inspect.signature(synthesize).parameters}
    accepted -= {"self", "exemplar", "module_options"}
    hints = {key: f"L-BFGS settings go in lbfgs={{{key!r}: ...}}" for key in (*LBFGS_DEFAULTS, "max_eval")}
    if batch:
        accepted -= set(BATCH_SETS)
        hints.update({key: "batch() sets it for every item" for key in BATCH_SETS})
    require_known_options(options, accepted, caller, hints)


def lightning_callbacks(callbacks: Any) -> list[Any]:
    """``callbacks`` as a list of Lightning callbacks: one callback alone is accepted, as the
    Trainer accepts it; anything else is refused here, not at the Trainer's first hook."""
    import lightning as L

    if callbacks is None:
        return []
    callbacks = [callbacks] if isinstance(callbacks, L.Callback) else callbacks
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, (list, tuple)):
        raise InvalidArgumentError(f"callbacks must be a Lightning Callback or a list of them, got "
                                   f"{type(callbacks).__name__}")
    for callback in callbacks:
        if not isinstance(callback, L.Callback):
            raise InvalidArgumentError(f"callbacks must be Lightning Callbacks, got {type(callback).__name__}")
    return list(callbacks)


@dataclass
class SynthesisResult:
    """What a run produced: the image, the final losses and what it cost."""

    image: torch.Tensor  # (3, H, W) in [0, 1], CPU: the first variation
    losses: dict[str, float]
    steps: int
    evals: int
    seconds: float
    module: TextureSynthesis = field(repr=False)
    log_dir: str | None = None
    #: the coarse stages the run was configured with (none run when it resumed a checkpoint)
    coarse: CoarseSchedule | None = None

    @property
    def images(self) -> torch.Tensor:
        """All variations, ``(variations, 3, H, W)``."""
        return self.module.outputs()

    def save(self, path: str | os.PathLike) -> list[Path]:
        """Save the result; several variations go to ``stem_0.png`` … ``stem_{K-1}.png``."""
        return self.module.save_outputs(path)


@contextmanager
def quiet_lightning(enabled: bool = True) -> Iterator[None]:
    """Silence Lightning's banner lines (devices, tips) for command-line use."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def fit(
    module: TextureSynthesis,
    steps: int,
    *,
    logdir: str | os.PathLike | None | bool = DEFAULT_LOGDIR,
    quiet: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    image_path: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    **trainer_options: Any,
) -> tuple[float, str | None]:
    """Run L-BFGS steps on ``module`` with a fresh Trainer; returns (seconds, log dir).

    ``steps`` is the run's total: resuming from ``resume`` (a checkpoint) continues up to it.
    ``checkpoint`` receives a checkpoint every ``checkpoint_every`` steps and when SIGINT or
    SIGTERM stops the run at the end of a step (``image_path`` then receives the image).
    """
    saver = SaveAndInterrupt(checkpoint, image_path, checkpoint_every)
    callbacks = [*lightning_callbacks(trainer_options.pop("callbacks", ())), saver]
    if resume is not None:
        done = check_resumable(resume)
        if done >= steps:  # Lightning would end at once, silently
            log.warning("resume %s has done %d steps already, not fewer than the %d asked for: no step runs",
                        resume, done, steps)
    with quiet_lightning(quiet):
        trainer = make_trainer(steps, logdir=logdir, run_name=module.exemplar_name, callbacks=callbacks,
                               **trainer_options)
        start = time.perf_counter()
        sigint_handler = signal.getsignal(signal.SIGINT)
        try:
            trainer.fit(module, ckpt_path=str(resume) if resume is not None else None)
        except SystemExit:
            if not trainer.interrupted:
                raise
            # Ctrl-C with no checkpoint to save (a coarse stage, or no checkpoint asked for):
            # Lightning's "graceful shutdown" ignores SIGINT from then on and exits with status 1,
            # silently when quiet; give the caller the KeyboardInterrupt (the CLI: exit 130)
            if threading.current_thread() is threading.main_thread() and sigint_handler is not None:
                signal.signal(signal.SIGINT, sigint_handler)
            raise KeyboardInterrupt from None
        except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as error:
            if resume is None:
                raise
            raise CheckpointError(
                f"--resume {resume}: not a usable texsynth checkpoint ({torch_load_failure(error)})") from None
        seconds = time.perf_counter() - start
    log_dir = trainer.logger.log_dir if trainer.logger is not None else None
    return seconds, log_dir


def synthesize(
    exemplar: ImageSource,
    *,
    steps: int = DEFAULT_STEPS,
    size: int | str | tuple[int, int] | None = None,
    backbone: Any = None,
    weights: Any = None,
    losses: Any = None,
    preset: Any = None,
    seed: int | None = None,
    logdir: str | os.PathLike | None | bool = False,
    log_images_every: int = 10,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    precision: str | int | None = "32-true",
    matmul_precision: str | None = None,
    deterministic_on_gpu: bool = True,
    progress_bar: bool = False,
    quiet: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    image_path: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    coarse_levels: int | None = None,
    coarse_steps: int | None = None,
    coarse_layers: str | None = None,
    coarse_starts: int | None = None,
    stop_when_stalled: float | None = None,
    max_copy_score: float | None = None,
    callbacks: Sequence[Any] = (),
    **module_options: Any,
) -> SynthesisResult:
    """Synthesize a texture like ``exemplar`` in one call.

    ``steps`` counts L-BFGS steps (each up to ``max_iter`` evaluations); with ``resume`` (a
    checkpoint of the same settings) it is the total the resumed run continues to.
    ``coarse_levels`` coarser stages (1/2^k of the size, ``coarse_steps`` steps each, else
    ``steps``) run first and start the full-size optimization (:mod:`texsynth.multiscale`),
    matching every layer or, with ``coarse_layers="matched"``, only those whose receptive field
    the full size has; with ``coarse_starts=n`` the coarsest stage runs from ``n`` noise images
    and each output goes on from the one whose loss ends lowest; all four default to the preset's.
    Other keyword options go to :class:`TextureSynthesis` (``exemplar_size``, ``init``,
    ``lbfgs``, …). ``stop_when_stalled=f`` ends the full-size run early once the loss
    improves by less than the fraction ``f`` per step for two steps in a row
    (:class:`~texsynth.callbacks.StopWhenStalled`); ``max_copy_score=s`` undoes the step
    after which the output's copy score exceeds ``s`` and stops there
    (:class:`~texsynth.callbacks.StopBeforeCopying`). TensorBoard logging is off unless
    ``logdir`` is given. ``seconds`` in the result counts every stage. On a GPU the run uses
    deterministic kernels, so a seed gives the same image every time;
    ``deterministic_on_gpu=False`` trades that for up to 1.8x cheaper evaluations
    (:class:`~texsynth.callbacks.DeterministicOnGPU`). The run uses one device (``devices=[k]``
    picks it); :func:`texsynth.batch` spreads many images over many devices.
    """
    require_synthesis_options(module_options, "synthesize")
    for name, path in (("image_path", image_path), ("checkpoint", checkpoint), ("resume", resume)):
        if path is not None:
            require_path(path, name)
    if logdir not in (None, False, True):
        require_path(logdir, "logdir")
    for name, flag in (("deterministic_on_gpu", deterministic_on_gpu), ("progress_bar", progress_bar),
                       ("quiet", quiet)):
        require_flag(flag, name)
    callbacks = [*lightning_callbacks(callbacks), *stopping_callbacks(stop_when_stalled, max_copy_score)]
    require_coarse_steps(coarse_steps)
    require_count(checkpoint_every, "checkpoint_every", minimum=0)  # before the coarse stages run
    require_count(log_images_every, "log_images_every")
    require_coarse_layers(coarse_layers)
    require_coarse_starts(coarse_starts)
    recipe_options = dict(backbone=backbone, weights=weights, losses=losses, preset=preset, **module_options)
    module = TextureSynthesis(exemplar, size=size, seed=seed, **recipe_options)
    coarse = CoarseSchedule.resolve(module.preset, coarse_levels, coarse_steps, coarse_layers, coarse_starts)
    if image_path is not None:
        output_format(image_path)  # a suffix no image can be written under fails now, not after the run
        module.output_paths(image_path)  # ... and so does the exemplar's own file
    if checkpoint is not None:
        _require_checkpoint_apart(module, checkpoint, image_path)
    for path in (image_path, checkpoint):
        if path is not None:
            require_writable_folder(path, str(path))
    if logdir is True:
        logdir = DEFAULT_LOGDIR
    if logdir:  # before the coarse stages, not when the full size's Trainer starts
        require_folder_accepts_files(logdir, "logdir")
    devices = one_device(devices)
    device = planned_device(accelerator, devices)
    precision = resolve_cpu_precision(precision, accelerator)
    if coarse.levels and resume is None and device is not None:
        # the full size needs the most memory: refuse it before its coarse stages run, not after
        check_memory(module, device, allow_checkpointing=module.checkpointing is None)
    trainer_options = dict(quiet=quiet, accelerator=accelerator, devices=devices, precision=precision,
                           matmul_precision=matmul_precision, deterministic_on_gpu=deterministic_on_gpu,
                           progress_bar=progress_bar)
    coarse_seconds = 0.0
    if coarse.levels and resume is None:

        def run_stage(stage: TextureSynthesis, stage_steps: int) -> None:
            nonlocal coarse_seconds
            coarse_seconds += fit(stage, stage_steps, logdir=False, **trainer_options)[0]

        coarse_to_fine_start(module, coarse.levels, coarse.steps_per_stage(steps), run_stage, recipe_options,
                             layers=coarse.layers, starts=coarse.starts)
    seconds, log_dir = fit(
        module, steps, logdir=logdir, log_images_every=log_images_every,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, image_path=image_path, resume=resume,
        callbacks=callbacks, **trainer_options,
    )
    seconds += coarse_seconds
    with torch.no_grad():
        final = {name: float(value) for name, value in module.compute_losses().items()}
    return SynthesisResult(
        image=module.output(), losses=final, steps=module.num_steps, evals=module.num_evals,
        seconds=seconds, module=module, log_dir=log_dir, coarse=coarse,
    )


def _require_checkpoint_apart(module: TextureSynthesis, checkpoint: str | os.PathLike,
                              image_path: str | os.PathLike | None) -> None:
    """A checkpoint saved onto the exemplar destroys an input; onto the image output, it is
    overwritten by the image saved right after it, and the run cannot be resumed."""
    module.refuse_exemplar_file(checkpoint, label="checkpoint ")
    target = Path(checkpoint).resolve()
    images = module.output_paths(image_path) if image_path is not None else []
    if any(target == image.resolve() for image in images):
        raise InvalidArgumentError(f"checkpoint {checkpoint} is also the image output; give them different names")


class TextureSynthesisCNN:
    """The reference implementation's interface, on top of :class:`TextureSynthesis`.

    ``TextureSynthesisCNN(tex_exemplar_path)`` uses the ``liu2016`` preset (VGG19 with
    ImageNet weights, the reference's exact numerics) unless told otherwise; any keyword of
    :class:`TextureSynthesis` can be passed (e.g. ``weights="path/to/vgg19.pth"``).
    """

    def __init__(
        self,
        tex_exemplar_path: ImageSource,
        *,
        preset: Any = "liu2016",
        logdir: str | os.PathLike | None | bool = False,
        progress_bar: bool = True,
        trainer_options: dict[str, Any] | None = None,
        **module_options: Any,
    ) -> None:
        self.module = TextureSynthesis(tex_exemplar_path, preset=preset, **module_options)
        self.tex_exemplar_name = self.module.exemplar_name
        self.logdir = logdir
        self.progress_bar = progress_bar
        self.trainer_options = dict(trainer_options or {})

    @property
    def output_image(self) -> torch.Tensor:
        """The current synthesized image, ``(3, H, W)`` in [0, 1]."""
        return self.module.output()

    @property
    def exemplar(self) -> torch.Tensor:
        return self.module.exemplar[0].detach().cpu()

    @property
    def losses(self) -> list[float]:
        """Loss after each epoch (L-BFGS step) since construction."""
        return self.module.loss_history

    def synthesize_texture(self, num_epochs: int = 250, display_when_done: bool = False) -> torch.Tensor:
        """Start from new noise and optimize for ``num_epochs`` L-BFGS steps."""
        require_count(num_epochs, "num_epochs")  # before the current image is thrown away
        self.module.reset_image()
        return self.optimize(num_epochs, display_when_done=display_when_done)

    def optimize(self, num_epochs: int = 250, display_when_done: bool = False) -> torch.Tensor:
        """Continue optimizing the current image, keeping the L-BFGS state."""
        require_count(num_epochs, "num_epochs")  # named as the caller wrote it, not fit's "steps"
        fit(self.module, num_epochs, logdir=self.logdir, progress_bar=self.progress_bar,
            quiet=True, **self.trainer_options)
        if display_when_done:
            self.display()
        return self.output_image

    def save_textures(self, output_dir: str | os.PathLike = "./results/", display_when_done: bool = False) -> tuple[Path, Path]:
        """Write ``exemplar_<name>.png`` and ``synth_<name>.png`` into ``output_dir``."""
        directory = Path(output_dir)
        exemplar_path = save_image(self.exemplar, directory / f"exemplar_{self.tex_exemplar_name}.png")
        synth_path = save_image(self.output_image, directory / f"synth_{self.tex_exemplar_name}.png")
        if display_when_done:
            self.display()
        return exemplar_path, synth_path

    def display(self) -> None:
        """Show exemplar and synthesis side by side in the system's image viewer."""
        from PIL import Image

        left, right = to_pil(self.exemplar), to_pil(self.output_image)
        canvas = Image.new("RGB", (left.width + right.width + 8, max(left.height, right.height)), "white")
        canvas.paste(left, (0, 0))
        canvas.paste(right, (left.width + 8, 0))
        canvas.show()
