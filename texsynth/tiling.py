"""Seamless tiles: what changes when the output must wrap around.

A tiled output (``tile=True``) is optimized as a periodic image: the backbone pads
circularly (:func:`make_periodic`) and the spectrum constraint uses the exemplar's periodic
component. Two more places would otherwise put a seam back in:

- the exemplar's features. Circular padding makes the jump between its opposite borders a
  feature of the targets, and the output grows seam-like edges to match it (a photograph lit
  more on one side: blotchy_0025 came out with a hard edge between its blue and red layers).
  Moisan's periodic component removes the jump, but where it is structure rather than light
  (``bricks``: mortar along one border, brick along the other) it repaints the texture near the
  borders. :func:`tile_targets_source` removes only the large-scale part of the jump, the part
  a blurred exemplar still has: the lighting, not the mortar;
- the switch from a coarse stage to the next. An ordinary upsampling treats the coarse
  image's borders as borders, and the finer stage starts from a seam its steps keep (the
  weight-free default at 256x256: seam score 2.3-3.0 instead of about 1);
  :func:`periodic_resize` wraps around.

Outputs larger than the exemplar are tiled too unless asked otherwise (:func:`resolve_tile`);
those of a periodic exemplar at a size that is not a whole multiple of its period are cut from
a tile that is (:func:`image_size_for`, :func:`texture_period`).

Measured in benchmarks/README.md, "Seamless tiles" and "Outputs larger than the exemplar".
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from texsynth.backbones.base import Backbone, circular_pad, set_circular_padding
from texsynth.errors import require_flag
from texsynth.losses.spectrum import periodic_component

#: blur of the exemplar whose border jumps count as lighting, as a fraction of its larger side
LIGHTING_SCALE = 1 / 32


def resolve_tile(tile: bool | None, exemplar_size: tuple[int, int], output_size: tuple[int, int]) -> bool:
    """``tile``, or for ``None`` whether the output is larger than the exemplar in either dimension.

    Why larger outputs wrap around by default: with zero (or mirrored) padding the positions
    near the borders have statistics of their own, and they are a larger share of a small
    exemplar's features than of a large output's. Matching them, outputs twice the exemplar's
    size grew a frame along their borders (a pale, streaky band on bubbly_0139, a dark rim on
    blotchy_0025) and structure anchored to it, with a washed-out centre; with circular padding
    every position is alike and the frame goes away. The output is then a tile, and its targets
    lose the exemplar's large-scale lighting (:func:`tile_targets_source`), colour layouts that
    span the exemplar included.
    """
    if require_flag(tile, "tile", none_means="auto") is None:
        return output_size[0] > exemplar_size[0] or output_size[1] > exemplar_size[1]
    return tile


def image_size_for(tile: bool | None, exemplar: torch.Tensor, output_size: tuple[int, int]) -> tuple[int, int]:
    """The size of the image to optimize for an output of ``output_size``: that size, except
    for a periodic exemplar tiled by default (``tile=None``, a larger output) at a size that
    is not a whole multiple of its period (:func:`texture_period`). The period cannot repeat a
    whole number of times around such a tile, and the texture breaks where the spectrum
    constraint and the features disagree (``bricks`` 256 -> 400: a band of faded,
    cross-hatched rows across the middle). The image is then the next whole multiple of the
    period (448x448 for 400x400: bricks repeat every 64 pixels), a tile of regular rows, and
    the output its top-left crop: not itself a tile (``tile=True`` asks for one at the size
    given)."""
    if tile is not None or not resolve_tile(None, tuple(exemplar.shape[-2:]), output_size):
        return output_size
    period = unfitting_period(exemplar, output_size)
    if period is None:
        return output_size
    return next_multiple(output_size, period)


def next_multiple(size: tuple[int, int], period: tuple[int, int]) -> tuple[int, int]:
    """The smallest size of whole multiples of ``period`` at least ``size``."""
    (height, width), (period_h, period_w) = size, period
    return math.ceil(height / period_h) * period_h, math.ceil(width / period_w) * period_w


def unfitting_period(exemplar: torch.Tensor, size: tuple[int, int]) -> tuple[int, int] | None:
    """The period (:func:`texture_period`) of an exemplar that repeats itself
    (:func:`repeats_itself`) where a tile of ``size`` cannot hold a whole number of them; None
    where it can, or where the exemplar does not repeat.

    An exemplar that repeats at shifts that do not divide its size (chequered_0096's squares are
    75 pixels apart in 256) has its own size as its period here: at whole multiples of that
    size its spectrum target keeps its exact frequencies, and the squares come out more regular
    (benchmarks/README.md, "Outputs larger than the exemplar")."""
    (height, width), (ex_height, ex_width) = size, exemplar.shape[-2:]
    if height % ex_height == 0 and width % ex_width == 0:  # a multiple of any period of the exemplar
        return None
    (period_h, period_w), repeats = _periodicity(exemplar)
    if not repeats or (height % period_h == 0 and width % period_w == 0):
        return None
    return period_h, period_w


def texture_period(image: torch.Tensor) -> tuple[int, int]:
    """The smallest vertical and horizontal shifts that map ``image`` (``(..., C, h, w)``) to
    itself: divisors of its height and width (the full size where no smaller one holds).
    ``bricks`` at 256x256: 64x64 (two rows of 32; a brick is 64 wide).

    A shift counts where the autocorrelation of the mean-removed image along that axis
    (:func:`autocorrelation`) is, at it and at each of its multiples up to half the size,
    at least :data:`PERIOD_CORRELATION`, and is a peak: no lower than at the neighbouring
    shifts, and :data:`PERIOD_DIP` above its minimum at the shifts before it (a smooth image
    correlates highly with itself at small shifts without repeating). Measured on the bundled
    and DTD exemplars: bricks and weave 0.79-0.82 at their period, none of the stochastic ones
    a peak above 0.7."""
    return _periodicity(image)[0]


def repeats_itself(image: torch.Tensor) -> bool:
    """Whether ``image`` repeats at some shift of at most half its size in each direction,
    along an axis or not, dividing its size or not: the :func:`autocorrelation` has a peak there
    as :func:`texture_period` asks of a period, with its dip taken along the line from zero
    shift. bricks, weave and chequered_0096 do; no stochastic DTD exemplar does, blotchy_0091
    included (its halves share a copied patch: self-similarity 0.91)."""
    return _periodicity(image)[1]


def autocorrelation(image: torch.Tensor) -> torch.Tensor | None:
    """The autocorrelation of ``image`` (``(..., h, w)``, the mean of each channel removed) at
    every shift, as a ``(2h - 1, 2w - 1)`` grid with zero shift at ``(h - 1, w - 1)``: the mean
    product of values that far apart over the positions where both lie inside the image (no
    wrapping around: a period need not divide the size), over the mean square. None for a
    flat image."""
    height, width = image.shape[-2:]
    signal = image.detach().reshape(-1, height, width)
    signal = signal.double() if signal.dtype == torch.float64 else signal.float()  # float32: ample for peaks of 0.7
    signal = signal - signal.mean(dim=(-2, -1), keepdim=True)
    energy = signal.pow(2).mean()
    if energy <= 0:
        return None
    size = (2 * height, 2 * width)  # zero-padded: no wrap-around
    products = torch.fft.irfft2(torch.fft.rfft2(signal, s=size).abs().pow(2), s=size).sum(dim=0)
    products = torch.roll(products, (height - 1, width - 1), dims=(0, 1))[: 2 * height - 1, : 2 * width - 1]
    rows = height - torch.arange(1 - height, height, dtype=products.dtype).abs()
    columns = width - torch.arange(1 - width, width, dtype=products.dtype).abs()
    pairs = torch.outer(rows, columns) * signal.shape[0]
    return products / pairs / energy


#: autocorrelation at a shift and each of its multiples from which it is a period (texture_period)
PERIOD_CORRELATION = 0.7
#: how far the autocorrelation at a period rises above its minimum over shorter shifts
PERIOD_DIP = 0.1
#: the shortest period looked for, in pixels
MIN_PERIOD = 4
#: peaks of the autocorrelation looked at (the highest) in telling whether an image repeats
MAX_PEAKS = 64


def _periodicity(image: torch.Tensor) -> tuple[tuple[int, int], bool]:
    """(texture_period, repeats_itself) from one autocorrelation."""
    height, width = image.shape[-2:]
    correlation = autocorrelation(image)
    if correlation is None:  # a flat image repeats at every shift: nothing to fit
        return (height, width), False
    period = (_axis_period(correlation[height - 1 :, width - 1]), _axis_period(correlation[height - 1, width - 1 :]))
    return period, period != (height, width) or _has_repetition_peak(correlation)


def _has_repetition_peak(correlation: torch.Tensor) -> bool:
    """Whether the autocorrelation grid has a peak of a repetition at a shift of at most half the
    size each way: at least PERIOD_CORRELATION, the largest of its 3x3 neighbourhood, and
    PERIOD_DIP above the lowest value on the line from zero shift to it."""
    centre_y, centre_x = (side // 2 for side in correlation.shape)
    reach_y, reach_x = (centre_y + 1) // 2, (centre_x + 1) // 2
    window = correlation[centre_y - reach_y : centre_y + reach_y + 1, centre_x - reach_x : centre_x + reach_x + 1]
    neighbourhood_max = F.max_pool2d(window[None, None], 3, stride=1, padding=1)[0, 0]
    shifts_y = torch.arange(-reach_y, reach_y + 1)[:, None].expand_as(window)
    shifts_x = torch.arange(-reach_x, reach_x + 1)[None, :].expand_as(window)
    candidates = ((window >= PERIOD_CORRELATION) & (window >= neighbourhood_max)
                  & (torch.maximum(shifts_y.abs(), shifts_x.abs()) >= MIN_PERIOD) & (shifts_y >= 0))  # r(-v) = r(v)
    values = window[candidates]
    for index in values.argsort(descending=True)[:MAX_PEAKS]:
        dy, dx = int(shifts_y[candidates][index]), int(shifts_x[candidates][index])
        steps = max(abs(dy), abs(dx))
        fractions = torch.arange(1, steps, dtype=torch.float64) / steps
        line = window[(reach_y + fractions * dy).round().long(), (reach_x + fractions * dx).round().long()]
        if values[index] - line.min() >= PERIOD_DIP:
            return True
    return False


def _repeating_shifts(correlation: torch.Tensor) -> list[int]:
    """Shifts of at most half the size at which the autocorrelation along an axis has a
    repetition's peak: at least PERIOD_CORRELATION, no lower than its neighbours, PERIOD_DIP
    above its minimum over the shorter shifts."""
    size = correlation.shape[0]
    if size // 2 < MIN_PERIOD:
        return []
    shifts = torch.arange(MIN_PERIOD, size // 2 + 1)
    at_shift = correlation[shifts]
    lowest_before = torch.cummin(correlation[1:], dim=0).values[shifts - 2]  # min over shifts 1 .. shift-1
    peaks = ((at_shift >= PERIOD_CORRELATION) & (at_shift >= correlation[shifts - 1])
             & (at_shift >= correlation[shifts + 1]) & (at_shift - lowest_before >= PERIOD_DIP))
    return shifts[peaks].tolist()


def _axis_period(correlation: torch.Tensor) -> int:
    """The period along one axis from the autocorrelation along it (see :func:`texture_period`)."""
    size = correlation.shape[0]
    for period in _repeating_shifts(correlation):
        if size % period == 0 and correlation[period : size // 2 + 1 : period].min() >= PERIOD_CORRELATION:
            return period
    return size


def make_periodic(backbone: nn.Module, losses: Iterable[nn.Module]) -> None:
    """Circular padding everywhere the backbone pads, periodic spectrum targets."""
    if isinstance(backbone, Backbone):
        backbone.set_circular_padding(True)  # backbones may pad outside Conv2d too
    else:
        set_circular_padding(backbone, True)
    for loss in losses:
        if hasattr(loss, "periodic"):
            loss.periodic = True


def tile_targets_source(exemplar: torch.Tensor) -> torch.Tensor:
    """The image whose circularly padded features are a tiled output's targets: ``exemplar``
    less the smooth component (Moisan 2011) of its blurred self, i.e. without the large-scale
    jumps across its borders, and with its fine structure kept."""
    blurred = _gaussian_blur(exemplar, max(exemplar.shape[-2:]) * LIGHTING_SCALE)
    lighting_jumps = blurred - periodic_component(blurred)
    return exemplar - lighting_jumps.to(exemplar.dtype)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """torchvision's Gaussian blur (mirrored borders), one axis at a time: its 2-D kernel
    would cost sigma times more (a 2048 exemplar: 385x385 taps per pixel)."""
    height, width = image.shape[-2:]
    taps_h = 2 * min(math.ceil(3 * sigma), height - 1) + 1
    taps_w = 2 * min(math.ceil(3 * sigma), width - 1) + 1
    columns_blurred = gaussian_blur(image, [1, taps_h], [sigma, sigma])  # kernel_size is [x, y]
    return gaussian_blur(columns_blurred, [taps_w, 1], [sigma, sigma])


def _wrap_margin(coarse: int, fine: int) -> tuple[int, int]:
    """Smallest margin of at least 2 coarse pixels (bicubic support) that maps to whole fine pixels."""
    step = coarse // math.gcd(coarse, fine)
    margin = step * math.ceil(2 / step)
    return margin, margin * fine // coarse


def periodic_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a periodic ``(B, C, h, w)`` image to ``size``, wrapping around its borders.

    The image is padded with its own opposite side by a margin whose resized width is a whole
    number of pixels, resized, and cropped back; the result is exactly what resizing an
    endless tiling of the image would give, so it is periodic too.
    """
    height, width = image.shape[-2:]
    out_h, out_w = size
    top, crop_top = _wrap_margin(height, out_h)
    left, crop_left = _wrap_margin(width, out_w)
    padded = circular_pad(image, top, left)
    resized = F.interpolate(padded, size=(out_h + 2 * crop_top, out_w + 2 * crop_left), mode="bicubic",
                            align_corners=False)
    return resized[..., crop_top:crop_top + out_h, crop_left:crop_left + out_w]
