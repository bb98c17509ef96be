"""Wasserstein-2 distance between Gaussian fits of features (as in Crowson's style transfer).

Each layer's feature vectors are summarized by their mean μ and covariance Σ (plus 1e-4·I,
which keeps square roots well conditioned). Between two Gaussians,
W₂² = ‖μ − μ̂‖² + tr(Σ + Σ̂ − 2 (Σ̂^½ Σ Σ̂^½)^½); here both terms are divided by the channel
count, as in crowsonkb/style-transfer-pytorch. Unlike a Gram matrix it separates the mean
from the spread, so bright and contrasty textures are not traded against each other.
"""

from __future__ import annotations

import torch

from texsynth.losses.base import at_least_float32
from texsynth.losses.gram import gram_matrix
from texsynth.losses.layered import LayeredLoss
from texsynth.losses.registry import register_loss

EPSILON = 1e-4


def mean_and_covariance(features: torch.Tensor, eps: float = EPSILON) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, h, w)`` -> mean ``(B, C)`` and covariance ``(B, C, C)`` (+ eps·I)."""
    flat = at_least_float32(features).flatten(2)
    mean = flat.mean(dim=-1)
    centred = flat - mean.unsqueeze(-1)
    # a Gram matrix of the centred features over their N positions ("hw": / N), which
    # gram_matrix computes with its one-product backward (and, on CPU, by block rows)
    covariance = gram_matrix(centred.unsqueeze(-1), "hw")
    identity = torch.eye(flat.shape[1], device=flat.device, dtype=flat.dtype)
    return mean, covariance + eps * identity


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of symmetric positive semi-definite matrices by eigendecomposition."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(0).sqrt()) @ vectors.transpose(-1, -2)


def gaussian_w2(
    mean: torch.Tensor, covariance: torch.Tensor, target_mean: torch.Tensor, target_sqrt: torch.Tensor,
    target_covariance: torch.Tensor,
) -> torch.Tensor:
    """W₂² / C between N(mean, covariance) and the target Gaussian, summed over the batch."""
    channels = mean.shape[-1]
    dtype = mean.dtype
    # The trace terms nearly cancel near the optimum: compute the CxC algebra in float64.
    mean, covariance = mean.double(), covariance.double()
    target_mean, target_sqrt = target_mean.double(), target_sqrt.double()
    target_covariance = target_covariance.double()
    mean_term = (mean - target_mean).pow(2).sum(dim=-1)
    product = target_sqrt @ covariance @ target_sqrt
    product = 0.5 * (product + product.transpose(-1, -2))
    # tr((Σ̂^½ Σ Σ̂^½)^½) = Σ sqrt(eigenvalues); eigvalsh is differentiable.
    cross = torch.linalg.eigvalsh(product).clamp_min(1e-12).sqrt().sum(dim=-1)
    trace = covariance.diagonal(dim1=-2, dim2=-1).sum(-1) + target_covariance.diagonal(dim1=-2, dim2=-1).sum(-1)
    return ((mean_term + trace - 2 * cross) / channels).sum().to(dtype)


@register_loss("mean_covariance")
class MeanCovarianceLoss(LayeredLoss):
    """Σ_l w_l W₂²(Gaussian fit of output features, Gaussian fit of exemplar features) / C."""

    def layer_target(self, name: str, features: torch.Tensor) -> torch.Tensor:
        mean, covariance = mean_and_covariance(features)
        covariance = covariance.double()
        # Packed as (1, C, 2C + 1): covariance, its square root, mean.
        return torch.cat([covariance, psd_sqrt(covariance), mean.double().unsqueeze(-1)], dim=-1)

    def layer_scale(self, name: str, target: torch.Tensor) -> float:
        channels = target.shape[1]
        covariance, mean = target[..., :channels], target[..., -1]
        return max(float((covariance.diagonal(dim1=-2, dim2=-1).sum() + mean.pow(2).sum()) / channels), 1e-30)

    def layer_loss(self, name: str, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        channels = features.shape[1]
        target_covariance = target[..., :channels]
        target_sqrt = target[..., channels : 2 * channels]
        target_mean = target[..., -1]
        mean, covariance = mean_and_covariance(features)
        return gaussian_w2(mean, covariance, target_mean, target_sqrt, target_covariance)
