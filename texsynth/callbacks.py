"""Lightning callbacks of texsynth: images in TensorBoard, stopping when the loss stalls or
before the output becomes a copy, float32 matrix products at a chosen internal precision,
deterministic kernels on GPUs, freed memory kept for reuse."""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from texsynth._logging import log
from texsynth.allocator import kept_memory_for_run
from texsynth.errors import InvalidArgumentError
from texsynth.metrics.functional import copy_score, self_similarity
from texsynth.periodicity import repeats_itself

#: cuBLAS reads its workspace layout from this variable; deterministic products need one set
CUBLAS_WORKSPACE_CONFIG = "CUBLAS_WORKSPACE_CONFIG"


def require_open_fraction(value: object, requirement: str) -> None:
    """Refuse anything but a number strictly between 0 and 1 (booleans included), naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise InvalidArgumentError(f"{requirement}, got {value!r}")


class TensorBoardImages(L.Callback):
    """Log the exemplar once and the current output every ``every_n_steps`` steps (and last)."""

    def __init__(self, every_n_steps: int = 10) -> None:
        self.every_n_steps = max(int(every_n_steps), 1)

    def _writer(self, trainer: L.Trainer):
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = self._writer(trainer)
        if writer is not None and trainer.is_global_zero:
            writer.add_image("exemplar", pl_module.exemplar[0].clamp(0, 1).cpu(), 0)
            writer.add_images("output", pl_module.outputs(), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        last = trainer.max_steps > 0 and step >= trainer.max_steps
        if step % self.every_n_steps == 0 or last:
            writer = self._writer(trainer)
            if writer is not None and trainer.is_global_zero:
                writer.add_images("output", pl_module.outputs(), step)


class StopWhenStalled(L.Callback):
    """Stop a synthesis once the loss improves by less than ``min_improvement`` (relative, per
    L-BFGS step) for ``patience`` steps in a row: ``--steps`` becomes an upper bound.

    Reads the module's per-step ``loss_history`` (kept in checkpoints, so a resumed run
    judges the same history); sets ``module.stalled`` when it stops the run.
    """

    def __init__(self, min_improvement: float, patience: int = 2) -> None:
        require_open_fraction(min_improvement, "stop_when_stalled must be a fraction in (0, 1)")
        if not isinstance(patience, int) or patience < 1:
            raise InvalidArgumentError(f"patience must be a positive integer, got {patience!r}")
        self.min_improvement, self.patience = float(min_improvement), patience

    def stalled(self, history: list[float]) -> bool:
        return loss_stalled(history, self.min_improvement, self.patience)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self.stalled(pl_module.loss_history):
            pl_module.stalled = True
            trainer.should_stop = True


class StopBeforeCopying(L.Callback):
    """Stop a synthesis before its output turns into a copy of the exemplar, keeping the last
    image that was not one.

    Run long, an optimization can drift towards a shifted copy of the exemplar (the weight-free
    default does at 128x128 after ~10 steps; README, Performance): the statistics of a small
    image pin it down. After every step the output's copy score is measured
    (:func:`texsynth.metrics.copy_score`: about 1 for a shifted copy, about 0.3 for a new
    texture; the largest over a batch of variations); above the threshold the step is undone
    (:meth:`TextureSynthesis.undo_step`) and the run stops, setting
    ``module.stopped_before_copying``. ``module.copy_score`` is the kept image's score
    (logged as ``copy_score``).

    A periodic exemplar (bricks, weave) correlates with itself at every period, so any good
    texture from it scores like a copy. For an exemplar that repeats itself
    (:func:`texsynth.periodicity.repeats_itself`) the threshold is therefore at least its own
    self-similarity (the copy score between its halves, 0.85-1 for periodic ones) plus
    ``PERIODIC_MARGIN``.
    """

    PERIODIC_MARGIN = 0.1

    def __init__(self, max_copy_score: float) -> None:
        require_open_fraction(max_copy_score, "max_copy_score must be a number in (0, 1)")
        self.max_copy_score = float(max_copy_score)
        self.threshold = self.max_copy_score

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        exemplar = pl_module.exemplar[0].float()
        if not repeats_itself(exemplar):  # halves that share a patch (blotchy_0091: 0.91) are no period
            self.threshold = self.max_copy_score
            return
        baseline = self_similarity(exemplar)
        self.threshold = max(self.max_copy_score, baseline + self.PERIODIC_MARGIN)
        if self.threshold >= 1:
            log.warning("the exemplar repeats itself (its halves have a copy score of %.2f): the copy score "
                        "cannot tell its textures from copies, so max_copy_score is not applied", baseline)
        elif self.threshold > self.max_copy_score:
            log.warning("the exemplar repeats itself (its halves have a copy score of %.2f), so new textures "
                        "score like copies; stopping before copying above %.2f instead of %.2f",
                        baseline, self.threshold, self.max_copy_score)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if pl_module.diverged or pl_module.num_steps == 0:
            return
        exemplar = pl_module.exemplar[0].float()
        with torch.no_grad():
            score = max(float(copy_score(image.float().clamp(0, 1), exemplar))
                        for image in pl_module.output_region())
        if score > self.threshold:
            pl_module.undo_step()
            pl_module.stopped_before_copying = True
            trainer.should_stop = True
            log.warning("stopped before copying: step %d reached a copy score of %.2f (> %.2f); kept the "
                        "image of step %d", pl_module.num_steps + 1, score, self.threshold, pl_module.num_steps)
        else:
            pl_module.copy_score = score
            pl_module.log("copy_score", score, on_step=True, on_epoch=False)


def loss_stalled(history: list[float], min_improvement: float, patience: int = 1) -> bool:
    """Whether each of the last ``patience`` steps lowered the loss by less than ``min_improvement``
    of its value."""
    if len(history) <= patience:
        return False
    recent = history[-patience - 1:]
    return all((before - after) < min_improvement * abs(before) for before, after in zip(recent, recent[1:]))


def stopping_callbacks(stop_when_stalled: float | None = None, max_copy_score: float | None = None) -> list[L.Callback]:
    """The callbacks ``synthesize``'s early-stopping options ask for; building them checks the values."""
    callbacks: list[L.Callback] = []
    if stop_when_stalled is not None:
        callbacks.append(StopWhenStalled(stop_when_stalled))
    if max_copy_score is not None:
        callbacks.append(StopBeforeCopying(max_copy_score))
    return callbacks


#: ``torch.set_float32_matmul_precision`` levels
MATMUL_PRECISIONS = ("highest", "high", "medium")


class MatmulPrecision(L.Callback):
    """Run a synthesis with float32 matrix products at a lower internal precision, back to full
    precision once the optimization stalls on the rounding, then restore the process's setting.

    ``"medium"`` lets oneDNN multiply float32 matrices in bfloat16 with float32 accumulation on
    CPUs with AMX or AVX-512 BF16 (the Gram matrices of wide layers, the weight-free banks'
    input gradients); ``"high"``/``"medium"`` allow TF32 on CUDA GPUs. Statistics stay float32
    tensors; only the products' inner arithmetic is rounded. Hardware without such units
    computes as ``"highest"``.

    Near convergence L-BFGS's line search compares losses that differ by less than that
    rounding and stops moving (README, Performance). So after the first step that lowers the
    loss by less than ``fall_back_below`` (relative), the rest of the run multiplies at
    ``"highest"``, keeping L-BFGS's history; ``None`` keeps the lower precision to the end.
    ``fell_back_at_step`` records when it happened. The targets are computed at full precision
    (the precision is lowered when training starts, after the module's ``on_fit_start``).
    """

    #: a step that lowers the loss by less than this fraction counts as stalled
    FALL_BACK_BELOW = 1e-3

    def __init__(self, precision: str, fall_back_below: float | None = FALL_BACK_BELOW) -> None:
        if precision not in MATMUL_PRECISIONS:
            raise InvalidArgumentError(
                f"matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)}, got {precision!r}"
            )
        if fall_back_below is not None:
            require_open_fraction(fall_back_below, "fall_back_below must be a fraction in (0, 1) or None")
        self.precision = precision
        self.fall_back_below = fall_back_below
        self.fell_back_at_step: int | None = None
        self._previous: tuple[str, ...] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        try:
            self._previous = ("global", torch.get_float32_matmul_precision())
        except RuntimeError:  # the process set per-backend precisions (torch.backends.*.fp32_precision)
            self._previous = ("backends", torch.backends.mkldnn.matmul.fp32_precision,
                              torch.backends.cuda.matmul.fp32_precision)
        self.fell_back_at_step = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.set_float32_matmul_precision(self.precision)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self.fall_back_below is None or self.fell_back_at_step is not None or self.precision == "highest":
            return
        if loss_stalled(pl_module.loss_history, self.fall_back_below):
            torch.set_float32_matmul_precision("highest")
            self.fell_back_at_step = pl_module.num_steps
            log.info("matmul precision %r stalled at step %d (loss %.4g): continuing at 'highest'",
                     self.precision, pl_module.num_steps, pl_module.loss_history[-1])

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()  # a failed run does not reach teardown

    def _restore(self) -> None:
        if self._previous is None:
            return
        if self._previous[0] == "global":
            torch.set_float32_matmul_precision(self._previous[1])
        else:
            torch.backends.mkldnn.matmul.fp32_precision = self._previous[1]
            torch.backends.cuda.matmul.fp32_precision = self._previous[2]
        self._previous = None


class DeterministicOnGPU(L.Callback):
    """Same seed, same image on a GPU: deterministic kernels for the run, restored after.

    On a CUDA device, cuDNN's and PyTorch's fastest kernels may add in a varying order; L-BFGS
    amplifies the last-bit differences (two same-seed runs on an H100 differed by up to 0.5 per
    pixel after 3 steps). Deterministic kernels made them bit-identical, at up to 1.8x the
    cost of an evaluation at 256-512 pixels and none measured at 1024 or with VGG19
    (benchmarks/README.md, "On a GPU"). Unlike ``Trainer(deterministic=True)`` the setting is
    process-wide only while the run lasts, warns rather than fails for an operation that has
    no deterministic kernel (a third-party loss), and does not fill new tensors with NaN. The
    CPU kernels used here are deterministic already, so nothing changes there.
    """

    def __init__(self) -> None:
        self._previous: dict | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type != "cuda" or self._previous is not None:
            return
        self._previous = {
            "algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "fill": torch.utils.deterministic.fill_uninitialized_memory,
            "cudnn": torch.backends.cudnn.deterministic,
            "benchmark": torch.backends.cudnn.benchmark,
            "cublas": os.environ.get(CUBLAS_WORKSPACE_CONFIG),
        }
        os.environ.setdefault(CUBLAS_WORKSPACE_CONFIG, ":4096:8")  # what cuBLAS needs to be deterministic
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is None:
            return
        previous, self._previous = self._previous, None
        torch.use_deterministic_algorithms(previous["algorithms"], warn_only=previous["warn_only"])
        torch.utils.deterministic.fill_uninitialized_memory = previous["fill"]
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous["cudnn"], previous["benchmark"]
        if previous["cublas"] is None:
            os.environ.pop(CUBLAS_WORKSPACE_CONFIG, None)
        else:
            os.environ[CUBLAS_WORKSPACE_CONFIG] = previous["cublas"]


class KeepFreedMemory(L.Callback):
    """Keep freed memory for reuse (:mod:`texsynth.allocator`), or give it back, as the run's
    size and ``TEXSYNTH_KEEP_FREED_MEMORY`` ask; decided when a fit starts, where the output's
    size and the device are known."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        image = getattr(pl_module, "image", None)
        pixels = image.shape[0] * image.shape[-2] * image.shape[-1] if isinstance(image, torch.Tensor) else 0
        kept_memory_for_run(pixels, on_cpu=trainer.strategy.root_device.type == "cpu")
