"""Building the Lightning ``Trainer`` for a synthesis run."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger

from texsynth._logging import log
from texsynth.allocator import keep_freed_memory_policy
from texsynth.callbacks import DeterministicOnGPU, KeepFreedMemory, MatmulPrecision, TensorBoardImages
from texsynth.checkpointing import AtomicCheckpointIO
from texsynth.errors import InvalidArgumentError, require_count
from texsynth.image_io import require_folder_accepts_files

DEFAULT_LOGDIR = "texsynth_logs"

# Batches are empty placeholders (the image is the model): worker and batch-size warnings
# about the data pipeline do not apply.
_IRRELEVANT_WARNINGS = (
    r".*does not have many workers.*",
    r".*Trying to infer the `batch_size`.*",
    r".*smaller than the logging interval.*",
    r".*`training_step` returned `None`.*",
    r".*isinstance\(treespec, LeafSpec\).*",  # raised inside Lightning, not actionable here
    r".*dataloader is not resumable.*",  # the "batches" are step indices; the module restores its own state
)


def make_trainer(
    steps: int,
    *,
    logdir: str | os.PathLike | None | bool = DEFAULT_LOGDIR,
    run_name: str = "texsynth",
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = 1,
    precision: str | int | None = "32-true",
    matmul_precision: str | None = None,
    deterministic_on_gpu: bool = True,
    progress_bar: bool = True,
    log_images_every: int = 10,
    callbacks: Sequence[L.Callback] = (),
    **trainer_options: Any,
) -> L.Trainer:
    """A Trainer running ``steps`` L-BFGS steps; ``logdir=False``/``None`` disables logging.

    ``matmul_precision`` (``"highest"``, ``"high"``, ``"medium"``): the internal precision of
    float32 matrix products during the run, until a step stalls on the rounding
    (:class:`~texsynth.callbacks.MatmulPrecision`). ``TEXSYNTH_KEEP_FREED_MEMORY``
    (``1``, ``0``, ``auto``; unset: ``0``, the ``texsynth`` command: ``auto``) lets glibc keep
    freed memory for reuse (:mod:`texsynth.allocator`: up to 1.7x cheaper CPU evaluations, more
    peak memory). ``deterministic_on_gpu`` (the default) makes a run on a
    GPU reproducible bit for bit (:class:`~texsynth.callbacks.DeterministicOnGPU`).
    """
    require_count(steps, "steps")
    require_count(log_images_every, "log_images_every")
    devices = one_device(devices)
    precision = resolve_cpu_precision(precision, accelerator)
    logger: TensorBoardLogger | bool = False
    extra: list[L.Callback] = [] if matmul_precision is None else [MatmulPrecision(matmul_precision)]
    if keep_freed_memory_policy() != "never":
        extra.append(KeepFreedMemory())
    if deterministic_on_gpu:
        extra.append(DeterministicOnGPU())
    if logdir is True:
        logdir = DEFAULT_LOGDIR
    if logdir:
        require_folder_accepts_files(logdir, "logdir")  # else TensorBoard fails at its first write
        logger = TensorBoardLogger(save_dir=str(Path(logdir)), name=run_name, default_hp_metric=False)
        extra.append(TensorBoardImages(log_images_every))
    for pattern in _IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    with lightning_settings(accelerator, devices, precision):
        return L.Trainer(
            max_steps=steps,
            max_epochs=-1,
            accelerator=accelerator,
            devices=devices,
            precision=precision,
            logger=logger,
            callbacks=[*extra, *callbacks],
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            plugins=[AtomicCheckpointIO()],
            **trainer_options,
        )


def one_device(devices: Any) -> Any:
    """``devices`` if it names one device (``"auto"`` becomes 1), else a one-line refusal.

    One synthesis is one optimization of one image: on several devices Lightning's DDP would
    start the calling script again per device and each would run all of it. Many images are
    spread over devices by :func:`texsynth.batch`.
    """
    if devices == "auto":  # Lightning's "auto" takes every GPU
        return 1
    text = devices.strip() if isinstance(devices, str) else None
    single = (devices == 1 or text == "1" or (isinstance(devices, (list, tuple)) and len(devices) == 1)
              or (text is not None and re.fullmatch(r"\d+,", text) is not None))  # "2,": the device with index 2
    if not single:
        raise InvalidArgumentError(
            f"devices {devices!r}: one synthesis runs on exactly one device (on several, each would run all of it); "
            f"pick one with devices=[k], or spread many images over devices with texsynth.batch")
    return devices


def planned_device(accelerator: Any, devices: Any) -> torch.device | None:
    """The one device a run with these settings will use, as far as it can be told before
    Lightning picks it. None when not known, or for several devices: their processes may be
    forked, which CUDA forbids once this process has touched it."""
    if not (devices == 1 or (isinstance(devices, (list, tuple)) and len(devices) == 1)):
        return None
    if runs_on_cpu(accelerator):
        return torch.device("cpu")
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        index = devices[0] if isinstance(devices, (list, tuple)) and devices else 0
        return torch.device("cuda", int(index))
    return None


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether Lightning will run ``accelerator`` on the CPU."""
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                    and not torch.backends.mps.is_available())


def resolve_cpu_precision(precision: Any, accelerator: Any) -> Any:
    """``"16-mixed"`` on a CPU becomes ``"bf16-mixed"``, as Lightning would make it, said once by
    texsynth: Lightning says it with a source path for every Trainer (a coarse stage, each batch item)."""
    if str(precision) in ("16-mixed", "16") and runs_on_cpu(accelerator):
        log.warning("precision %r: float16 autocast is not supported on CPU; using 'bf16-mixed'", precision)
        return "bf16-mixed"
    return precision


#: precisions that would store the image itself in 16 bits (Lightning's "-true" ones convert
#: the module's parameters): L-BFGS's late steps are far below its rounding
IMAGE_IN_16_BITS = ("16-true", "bf16-true")


@contextlib.contextmanager
def lightning_settings(accelerator: Any, devices: Any, precision: Any) -> Iterator[None]:
    """Turn Lightning's refusal of an accelerator, device list or precision (raised when a
    ``Trainer`` or ``Fabric`` is built) into a one-line error naming the setting."""
    if str(precision) in IMAGE_IN_16_BITS:
        raise InvalidArgumentError(
            f"precision {precision!r} would store the image in 16 bits, too coarse for L-BFGS's steps; "
            f"use bf16-mixed or 16-mixed (the backbone in 16 bits, the image and losses in float32)")
    try:
        yield
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as error:
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if "precision" in message.lower():
            setting = f"precision {precision!r}"
        else:
            setting = f"accelerator {accelerator!r} with devices {devices!r}"
        raise InvalidArgumentError(f"{setting}: {message}") from None
