"""torchmetrics ``Metric`` classes for the texture measures (batch accumulation, DDP sync)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torchmetrics import Metric

from texsynth.errors import InvalidArgumentError
from texsynth.metrics import functional as TF


class _PairwiseTextureMetric(Metric):
    """Average of a pairwise measure over ``(preds[i], target[i])`` pairs.

    ``target`` may hold one exemplar for every prediction (batch size 1).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    _function: Callable[..., torch.Tensor]

    def __init__(self, **kwargs: Any) -> None:
        metric_options = {k: kwargs.pop(k) for k in list(kwargs) if k not in _METRIC_BASE_OPTIONS}
        super().__init__(**kwargs)
        self.options = metric_options
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds = preds.unsqueeze(0) if preds.dim() == 3 else preds
        target = target.unsqueeze(0) if target.dim() == 3 else target
        if target.shape[0] not in (1, preds.shape[0]):
            raise InvalidArgumentError(
                f"expected `target` batch of 1 or {preds.shape[0]}, got {target.shape[0]}"
            )
        for index in range(preds.shape[0]):
            exemplar = target[0 if target.shape[0] == 1 else index]
            value = type(self)._function(preds[index].cpu(), exemplar.cpu(), **self.options)
            self.total += value.double().to(self.total.device)
            self.count += 1

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()


_METRIC_BASE_OPTIONS = {
    "compute_on_cpu", "dist_sync_on_step", "process_group", "dist_sync_fn",
    "distributed_available_fn", "sync_on_compute", "compute_with_cache",
}


class PatchSlicedWasserstein(_PairwiseTextureMetric):
    """Multi-scale 7x7 patch sliced Wasserstein distance (Karras et al. 2018)."""

    _function = staticmethod(TF.patch_swd)


class SpectrumDistance(_PairwiseTextureMetric):
    """Log Welch power-spectrum distance."""

    _function = staticmethod(TF.spectrum_distance)


class LBPDistance(_PairwiseTextureMetric):
    """Local-binary-pattern histogram distance (local structure)."""

    _function = staticmethod(TF.lbp_distance)


class ColorDistance(_PairwiseTextureMetric):
    """Sliced Wasserstein distance of RGB pixel distributions."""

    _function = staticmethod(TF.color_distance)


class ChromaNoise(_PairwiseTextureMetric):
    """Fine-scale colour speckle in excess of the exemplar's."""

    _function = staticmethod(TF.chroma_noise)


class CopyScore(_PairwiseTextureMetric):
    """Maximum normalized cross-correlation with the exemplar over shifts (copy detector)."""

    higher_is_better = False
    _function = staticmethod(TF.copy_score)
