"""Interruption and resumption: periodic checkpoints, Ctrl-C / SIGTERM at a step boundary.

A checkpoint is Lightning's: the image (the module's only state), the L-BFGS state (history,
step length, last gradient), the step count, plus texsynth's own counters, loss history,
settings fingerprint, exemplar and the settings that build the module again
(``TextureSynthesis.load_from_checkpoint``). Files are written atomically, so a crash while
saving keeps the previous checkpoint.

Signals are deferred to the end of the current L-BFGS step, so the checkpoint is taken at
a clean step boundary and a resumed run reaches exactly the image an uninterrupted run would
(on CPU). A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from texsynth._logging import log
from texsynth.errors import CheckpointError, TexsynthError, require_count, torch_load_failure
from texsynth.image_io import atomic_write


def check_resumable(path: str | os.PathLike) -> int:
    """Refuse, in one line, a ``resume`` file that is missing or not a texsynth checkpoint,
    before Lightning loads it (whose errors for such files are tracebacks or torch's
    multi-line advice). Returns the number of steps the checkpoint has done."""
    return int(read_checkpoint(path, "--resume").get("global_step", 0))


def read_checkpoint(path: str | os.PathLike, label: str) -> dict[str, Any]:
    """A texsynth checkpoint's contents, or a one-line error starting with ``label`` and the
    path. Memory-mapped, so even a large L-BFGS history costs nothing to open."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{label} {path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{label} {path}: not a usable texsynth checkpoint (the file is empty)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise CheckpointError(
            f"{label} {path}: not a usable texsynth checkpoint ({torch_load_failure(error)})") from None
    if not isinstance(checkpoint, dict) or "texsynth" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{label} {path}: a torch file, but not a texsynth checkpoint (no 'texsynth' entry)")
    return checkpoint


def load_checkpointed_module(cls: type[Any], path: str | os.PathLike, map_location: Any,
                             overrides: dict[str, Any]) -> Any:
    """Build ``cls`` from a texsynth checkpoint: see ``TextureSynthesis.load_from_checkpoint``."""
    checkpoint = read_checkpoint(path, "checkpoint")
    saved = checkpoint["texsynth"]
    stored_exemplar = "exemplar" not in overrides
    exemplar = overrides.pop("exemplar", saved.get("exemplar"))
    if exemplar is None:
        raise CheckpointError(f"checkpoint {path}: written by an older texsynth, without its exemplar; pass "
                              f"exemplar= and the run's settings")
    options = saved.get("rebuild")
    if options is None and not overrides:
        raise CheckpointError(f"checkpoint {path}: written by an older texsynth, without its settings; pass "
                              f"them (size=, backbone=, losses=, ...) to load_from_checkpoint")
    missing = {key: why for key, why in (saved.get("rebuild_missing") or {}).items() if key not in overrides}
    if missing:
        key, why = next(iter(missing.items()))
        raise CheckpointError(f"checkpoint {path}: cannot rebuild its module ({why}); pass {key}= to "
                              f"load_from_checkpoint")
    try:
        module = cls(exemplar, **{**(options or {}), **overrides})
    except TexsynthError as error:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild its module ({error}); pass that setting to "
                              f"load_from_checkpoint") from None
    if stored_exemplar:  # the run's name (run folders, hparams) and the file no output may overwrite
        module.exemplar_name = module.hparams["exemplar"] = saved.get("exemplar_name", module.exemplar_name)
        if saved.get("exemplar_file"):
            module.exemplar_file = Path(saved["exemplar_file"])
    module.on_load_checkpoint(checkpoint)  # refuses settings (or an exemplar) other than the checkpoint's
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path}: {torch_load_failure(error)}") from None
    if map_location is not None:
        module.to(torch.device(map_location))
    return module


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes to a temporary file and renames it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        atomic_write(path, lambda stream: torch.save(checkpoint, stream))


class SaveAndInterrupt(L.Callback):
    """Save image + checkpoint every ``every_n_steps`` and when SIGINT/SIGTERM arrives.

    Args:
        checkpoint_path: where the checkpoint goes (None: no checkpoints).
        image_path: where the current image goes on interruption (None: not saved).
        every_n_steps: periodic checkpoints (0: only on interruption).
    """

    def __init__(self, checkpoint_path: str | os.PathLike | None, image_path: str | os.PathLike | None = None,
                 every_n_steps: int = 0) -> None:
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.image_path = Path(image_path) if image_path else None
        self.every_n_steps = require_count(every_n_steps, "checkpoint_every", minimum=0)
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ signals
    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested is not None:  # a second signal: stop now
            self._restore_handlers()
            raise KeyboardInterrupt
        self.requested = signum
        log.warning("%s received: stopping after the current step (press Ctrl-C again to abort now)",
                    signal.Signals(signum).name)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requested = None
        if self.checkpoint_path is None and self.image_path is None:
            return  # nothing to save: signals keep their usual meaning (e.g. SIGTERM ends a script)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    # ------------------------------------------------------------------ saving
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        periodic = self.every_n_steps > 0 and step % self.every_n_steps == 0
        if self.requested is not None:
            self.save(trainer, pl_module)
            pl_module.interrupted = signal.Signals(self.requested).name
            trainer.should_stop = True
        elif periodic:
            self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.checkpoint_path is not None:
            trainer.save_checkpoint(self.checkpoint_path)
        if self.image_path is not None:
            pl_module.save_outputs(self.image_path)
