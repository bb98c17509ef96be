"""Lightning callbacks of texsynth: images in TensorBoard."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger


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


