"""Whether an image repeats itself, and at which shifts: what fits a periodic exemplar's
texture into a tile (:func:`texsynth.tiling.image_size_for`) and tells a periodic exemplar,
whose every good texture scores like a copy, from one whose halves merely share a patch
(:class:`texsynth.callbacks.StopBeforeCopying`).

Both read the exemplar's autocorrelation, taken without wrapping around (a period need not
divide the size): a repetition is a peak of it of at least :data:`PERIOD_CORRELATION`, with a
dip of :data:`PERIOD_DIP` between it and zero shift (a smooth image correlates highly with
itself at small shifts without repeating). Measured in benchmarks/README.md, "Outputs larger
than the exemplar".
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

#: autocorrelation at a shift (and each of its multiples, for a period) from which it repeats
PERIOD_CORRELATION = 0.7
#: how far the autocorrelation at a repetition rises above its minimum between it and zero shift
PERIOD_DIP = 0.1
#: the shortest period looked for, in pixels
MIN_PERIOD = 4
#: peaks of the autocorrelation looked at (the highest) in telling whether an image repeats
MAX_PEAKS = 64


class Periodicity(NamedTuple):
    """:func:`texture_period` and :func:`repeats_itself` of one image."""

    period: tuple[int, int]
    repeats: bool


def periodicity(image: torch.Tensor) -> Periodicity:
    """Both from one autocorrelation (1-2 s for a 2048x2048 image on 2 CPU cores)."""
    height, width = image.shape[-2:]
    correlation = autocorrelation(image)
    if correlation is None:  # a flat image repeats at every shift: nothing to fit
        return Periodicity((height, width), False)
    period = (_axis_period(correlation[height - 1 :, width - 1]), _axis_period(correlation[height - 1, width - 1 :]))
    return Periodicity(period, period != (height, width) or _has_repetition_peak(correlation))


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
    return periodicity(image).period


def repeats_itself(image: torch.Tensor) -> bool:
    """Whether ``image`` repeats at some shift of at most half its size in each direction,
    along an axis or not, dividing its size or not: the :func:`autocorrelation` has a peak there
    as :func:`texture_period` asks of a period, with its dip taken along the line from zero
    shift. bricks, weave and chequered_0096 do; no stochastic DTD exemplar does, blotchy_0091
    included (its halves share a copied patch: self-similarity 0.91)."""
    return periodicity(image).repeats


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
    values, candidates_y, candidates_x = window[candidates], shifts_y[candidates], shifts_x[candidates]
    for index in values.argsort(descending=True)[:MAX_PEAKS]:
        dy, dx = int(candidates_y[index]), int(candidates_x[index])
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
