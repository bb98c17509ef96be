"""Weight-free texture quality measures, as pure functions of (output, exemplar).

Each takes ``preds`` and ``target`` images ``(1, 3, H, W)`` (or ``(3, H, W)``) in [0, 1], of
any sizes (outputs need not match the exemplar's size), and returns a scalar tensor.
Lower is better for the distances; ``copy_score`` is high when the output merely copies
(a shifted crop of) the exemplar, which every distance would otherwise reward.

- ``patch_swd``: multi-scale sliced Wasserstein distance between 7x7 patch distributions of
  Laplacian pyramid bands (Karras et al. 2018, "Progressive Growing of GANs").
- ``spectrum_distance``: mean absolute difference of log Welch power spectra (luminance).
- ``lbp_distance``: total-variation distance between local binary pattern histograms at
  several radii (Ojala et al. 2002): local structure that random-phase noise lacks.
- ``color_distance``: sliced Wasserstein distance between RGB pixel distributions.
- ``chroma_noise``: fine-scale colour speckle in excess of the exemplar's (pink/green noise on
  a gray texture), which the distribution distances above barely register.
- ``copy_score``: maximum normalized cross-correlation over all shifts between band-passed
  luminances (where texture elements sit) at several scales (1, 1/2, 1/4), so copies of
  fine detail and copies of the large-scale layout are both caught.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from texsynth.errors import InvalidArgumentError
from texsynth.image_io import unit_range
from texsynth.losses.spectrum import luminance, opponent_channels

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _as_batch(image: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise InvalidArgumentError(f"expected `{name}` to be a tensor, got {type(image).__name__} "
                                   f"(texsynth.load_image reads paths, PIL images and arrays)")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise InvalidArgumentError(
            f"expected `{name}` to be one RGB image (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}"
        )
    return unit_range(image, f"`{name}`")


def _blur(image: torch.Tensor) -> torch.Tensor:
    channels = image.shape[1]
    kernel = torch.outer(_BINOMIAL, _BINOMIAL).to(image).expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(image, (2, 2, 2, 2), mode="reflect"), kernel, groups=channels)


def laplacian_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels (finest first) and the low-pass residual last."""
    bands = []
    current = image
    for _ in range(levels - 1):
        low = _blur(current)
        down = low[..., ::2, ::2]
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = down
    bands.append(current)
    return bands


def _levels_for(*images: torch.Tensor, coarsest: int = 16, max_levels: int = 4) -> int:
    side = min(min(image.shape[-2:]) for image in images)
    return max(1, min(max_levels, int(math.log2(max(side, 1) / coarsest)) + 1))


def _sample_patches(band: torch.Tensor, patch: int, count: int, generator: torch.Generator) -> torch.Tensor:
    patches = F.unfold(band, patch).squeeze(0).t()  # (positions, C * patch * patch)
    if patches.shape[0] > count:
        patches = patches[torch.randperm(patches.shape[0], generator=generator)[:count]]
    return patches


def _sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int, generator: torch.Generator) -> torch.Tensor:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of projections."""
    directions = torch.randn(a.shape[1], projections, generator=generator)
    directions = directions / directions.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ directions, dim=0)
    pb, _ = torch.sort(b @ directions, dim=0)
    if pa.shape[0] != pb.shape[0]:  # compare quantiles when the sets differ in size
        quantiles = torch.linspace(0, 1, min(pa.shape[0], pb.shape[0]))
        pa = torch.quantile(pa, quantiles, dim=0)
        pb = torch.quantile(pb, quantiles, dim=0)
    return (pa - pb).abs().mean()


def patch_swd(
    preds: torch.Tensor,
    target: torch.Tensor,
    patch_size: int = 7,
    num_patches: int = 4096,
    num_projections: int = 256,
    levels: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Multi-scale patch sliced Wasserstein distance (mean over pyramid levels)."""
    preds, target = _as_batch(preds, "preds"), _as_batch(target, "target")
    generator = torch.Generator().manual_seed(seed)
    levels = levels or _levels_for(preds, target)
    distances = []
    for band_p, band_t in zip(laplacian_pyramid(preds, levels), laplacian_pyramid(target, levels)):
        if min(band_p.shape[-2:] + band_t.shape[-2:]) < patch_size:
            break
        patches_t = _sample_patches(band_t, patch_size, num_patches, generator)
        patches_p = _sample_patches(band_p, patch_size, num_patches, generator)
        mean, std = patches_t.mean(dim=0), patches_t.std(dim=0).clamp_min(1e-6)
        distances.append(_sliced_wasserstein((patches_p - mean) / std, (patches_t - mean) / std,
                                             num_projections, generator))
    return torch.stack(distances).mean()


def welch_power_spectrum(image: torch.Tensor, window: int = 64) -> torch.Tensor:
    """Averaged periodogram of Hann-windowed, half-overlapping luminance tiles."""
    gray = luminance(_as_batch(image, "image"))
    window = min(window, 2 ** int(math.log2(min(gray.shape[-2:]))))
    tiles = F.unfold(gray, window, stride=max(window // 2, 1)).squeeze(0).t()
    tiles = tiles.view(-1, window, window)
    tiles = tiles - tiles.mean(dim=(1, 2), keepdim=True)
    hann = torch.hann_window(window, periodic=False)
    taper = torch.outer(hann, hann)
    spectra = torch.fft.fft2(tiles * taper).abs().pow(2) / taper.pow(2).sum()
    return spectra.mean(dim=0)


def spectrum_distance(preds: torch.Tensor, target: torch.Tensor, window: int = 64) -> torch.Tensor:
    """Mean |log10 P_preds − log10 P_target| of Welch spectra (DC excluded)."""
    preds, target = _as_batch(preds, "preds"), _as_batch(target, "target")
    window = min(window, 2 ** int(math.log2(min(preds.shape[-2:] + target.shape[-2:]))))
    p = welch_power_spectrum(preds, window)
    t = welch_power_spectrum(target, window)
    difference = (torch.log10(p + 1e-10) - torch.log10(t + 1e-10)).abs()
    difference[0, 0] = 0
    return difference.sum() / (difference.numel() - 1)


def lbp_histogram(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalized 256-bin histogram of 8-neighbour local binary patterns at ``radius``."""
    gray = luminance(_as_batch(image, "image"))[0, 0]
    height, width = gray.shape
    centre = gray[radius : height - radius, radius : width - radius]
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    codes = torch.zeros_like(centre, dtype=torch.long)
    for bit, (dy, dx) in enumerate(offsets):
        neighbour = gray[radius + dy * radius : height - radius + dy * radius,
                         radius + dx * radius : width - radius + dx * radius]
        codes |= (neighbour >= centre).long() << bit
    histogram = torch.bincount(codes.flatten(), minlength=256).float()
    return histogram / histogram.sum()


def lbp_distance(preds: torch.Tensor, target: torch.Tensor, radii: tuple[int, ...] = (1, 2, 4)) -> torch.Tensor:
    """Mean over radii of the total-variation distance between LBP histograms (0…1)."""
    preds, target = _as_batch(preds, "preds"), _as_batch(target, "target")
    for name, image in (("preds", preds), ("target", target)):
        if min(image.shape[-2:]) <= 2 * max(radii):  # no pixel has all its neighbours: a NaN histogram
            height, width = image.shape[-2:]
            raise InvalidArgumentError(f"`{name}` is {width}x{height}; LBP at radius {max(radii)} needs more than "
                                       f"{2 * max(radii)} pixels on each side")
    distances = [0.5 * (lbp_histogram(preds, r) - lbp_histogram(target, r)).abs().sum() for r in radii]
    return torch.stack(distances).mean()


def color_distance(
    preds: torch.Tensor, target: torch.Tensor, num_pixels: int = 16384, num_projections: int = 64, seed: int = 0
) -> torch.Tensor:
    """Sliced Wasserstein-1 distance between the RGB pixel distributions (0…1 scale)."""
    preds, target = _as_batch(preds, "preds"), _as_batch(target, "target")
    generator = torch.Generator().manual_seed(seed)

    def pixels(image: torch.Tensor) -> torch.Tensor:
        flat = image[0].reshape(3, -1).t()
        if flat.shape[0] > num_pixels:
            flat = flat[torch.randperm(flat.shape[0], generator=generator)[:num_pixels]]
        return flat

    return _sliced_wasserstein(pixels(preds), pixels(target), num_projections, generator)


def _fine_chroma(image: torch.Tensor) -> torch.Tensor:
    """RMS of the finest band of the two opponent-colour channels (luminance excluded)."""
    opponent = opponent_channels(image)
    return (opponent - _blur(opponent)).pow(2).mean().sqrt()


def chroma_noise(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fine-scale chroma RMS of ``preds`` minus the exemplar's, floored at 0 (0…1 scale).

    Speckle of independent colours changes the pixel distribution and the patch statistics
    by little (a gray exemplar's output with visible pink/green noise scored as well as a
    clean one), so it gets its own measure; brightness detail is not counted.
    """
    preds, target = _as_batch(preds, "preds"), _as_batch(target, "target")
    return (_fine_chroma(preds) - _fine_chroma(target)).clamp_min(0)


def _band_pass(image: torch.Tensor) -> torch.Tensor:
    gray = luminance(image)
    fine = _blur(gray)
    coarse = _blur(_blur(_blur(fine)))
    return fine - coarse


def copy_score(
    preds: torch.Tensor,
    target: torch.Tensor,
    min_overlap: float = 0.25,
    scales: tuple[int, ...] = (1, 2, 4),
    min_side: int = 48,
) -> torch.Tensor:
    """Maximum normalized cross-correlation of band-passed luminances over shifts and scales.

    At each scale (the images average-pooled by that factor) the luminances are band-passed
    and correlated at every shift, normalized over the overlapping region (overlaps smaller
    than ``min_overlap`` of the smaller image are ignored). About 1 for a shifted copy of the
    exemplar, low for a new texture. Coarse scales catch outputs that copy the exemplar's
    large-scale layout while their fine detail differs; a scale is skipped when the pooled
    images would be smaller than ``min_side`` (few pixels correlate well by chance).
    """
    preds, target = _as_batch(preds, "preds"), _as_batch(target, "target")
    scores = []
    for scale in scales:
        a_img = F.avg_pool2d(preds, scale) if scale > 1 else preds
        b_img = F.avg_pool2d(target, scale) if scale > 1 else target
        if scores and min(a_img.shape[-2:] + b_img.shape[-2:]) < min_side:
            break
        scores.append(_max_ncc(_band_pass(a_img)[0, 0], _band_pass(b_img)[0, 0], min_overlap))
    return torch.stack(scores).max().float().clamp(-1, 1)


def self_similarity(exemplar: torch.Tensor) -> float:
    """Copy score between the exemplar's left and right (top and bottom) halves, the larger:
    about 0.9 or more for a periodic exemplar (bricks, weave, a chequerboard), 0.2–0.4 for the
    stochastic DTD exemplars measured, but 0.91 for blotchy_0091, whose halves share a patch:
    high for an exemplar that repeats, not only for one (:func:`texsynth.periodicity.repeats_itself`
    tells)."""
    height, width = exemplar.shape[-2:]
    with torch.no_grad():
        across = copy_score(exemplar[..., : width // 2], exemplar[..., width // 2:])
        down = copy_score(exemplar[..., : height // 2, :], exemplar[..., height // 2:, :])
    return float(max(across, down))


def _max_ncc(a: torch.Tensor, b: torch.Tensor, min_overlap: float) -> torch.Tensor:
    (ha, wa), (hb, wb) = a.shape, b.shape
    height, width = ha + hb - 1, wa + wb - 1

    def correlate(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = torch.fft.rfft2(x.double(), s=(height, width))
        fy = torch.fft.rfft2(y.double(), s=(height, width))
        return torch.fft.irfft2(fx * fy.conj(), s=(height, width))

    ones_a, ones_b = torch.ones_like(a), torch.ones_like(b)
    overlap = correlate(ones_a, ones_b)
    cross = correlate(a, b)
    energy_a = correlate(a * a, ones_b)
    energy_b = correlate(ones_a, b * b)
    valid = overlap >= min_overlap * min(ha * wa, hb * wb) - 0.5
    ncc = cross / (energy_a * energy_b).clamp_min(1e-20).sqrt()
    return ncc[valid].max()


def seam_score(image: torch.Tensor) -> torch.Tensor:
    """How visible the seams are when ``image`` is tiled: the mean absolute jump across the
    wrap-around edges (last row to first, last column to first) divided by the mean jump
    between neighbouring pixels inside the image. About 1 for a seamless tile; a texture
    cut from a larger one typically scores 2 or more."""
    x = _as_batch(image, "image")
    inside = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    across = (x[..., 0, :] - x[..., -1, :]).abs().mean() + (x[..., :, 0] - x[..., :, -1]).abs().mean()
    return across / inside.clamp_min(1e-12)


def texture_metrics(preds: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """All measures at once, as floats: ``swd``, ``spectrum``, ``lbp``, ``color``, ``chroma``,
    ``copy``."""
    return {
        "swd": float(patch_swd(preds, target)),
        "spectrum": float(spectrum_distance(preds, target)),
        "lbp": float(lbp_distance(preds, target)),
        "color": float(color_distance(preds, target)),
        "chroma": float(chroma_noise(preds, target)),
        "copy": float(copy_score(preds, target)),
    }
