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
a tile that is (:func:`image_size_for`, :func:`texsynth.periodicity.texture_period`).

Measured in benchmarks/README.md, "Seamless tiles" and "Outputs larger than the exemplar".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from texsynth.backbones.base import Backbone, circular_pad, set_circular_padding
from texsynth.errors import require_flag
from texsynth.losses.spectrum import periodic_component
from texsynth.periodicity import periodicity

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
    is not a whole multiple of its period (:func:`unfitting_period`). The period cannot repeat
    a whole number of times around such a tile, and the texture breaks where the spectrum
    constraint and the features disagree (``bricks`` 256 -> 400: a band of faded,
    cross-hatched rows across the middle). The image is then the next whole multiple of the
    period (448x448 for 400x400: bricks repeat every 64 pixels), a tile of regular rows, and
    the output its top-left crop: not itself a tile (``tile=True`` asks for one at the size
    given)."""
    return plan_tile(tile, exemplar, output_size).image_size


class TilePlan(NamedTuple):
    """What is optimized for an output: the image's size (:func:`image_size_for`), and the
    exemplar's period where the output is no whole multiple of it (None where it is, where the
    exemplar does not repeat, or where nothing asked: an untiled output)."""

    image_size: tuple[int, int]
    unfitting_period: tuple[int, int] | None


def plan_tile(tile: bool | None, exemplar: torch.Tensor, output_size: tuple[int, int]) -> TilePlan:
    """:func:`image_size_for` and the period it went by, from one look at the exemplar. The
    period is looked for where it decides the size (``tile=None``, a larger output) and where
    ``tile=True`` asks for a tile it may not fit (which the module warns about)."""
    looks = tile is True or (tile is None and resolve_tile(None, tuple(exemplar.shape[-2:]), output_size))
    period = unfitting_period(exemplar, output_size) if looks else None
    if tile is None and period is not None:
        return TilePlan(next_multiple(output_size, period), period)
    return TilePlan(output_size, period)


def next_multiple(size: tuple[int, int], period: tuple[int, int]) -> tuple[int, int]:
    """The smallest size of whole multiples of ``period`` at least ``size``."""
    (height, width), (period_h, period_w) = size, period
    return math.ceil(height / period_h) * period_h, math.ceil(width / period_w) * period_w


def unfitting_period(exemplar: torch.Tensor, size: tuple[int, int]) -> tuple[int, int] | None:
    """The period (:func:`~texsynth.periodicity.texture_period`) of an exemplar that repeats
    itself (:func:`~texsynth.periodicity.repeats_itself`) where a tile of ``size`` cannot hold
    a whole number of them; None where it can, or where the exemplar does not repeat.

    An exemplar that repeats at shifts that do not divide its size (chequered_0096's squares are
    75 pixels apart in 256) has its own size as its period here: at whole multiples of that
    size its spectrum target keeps its exact frequencies, and the squares come out more regular
    (benchmarks/README.md, "Outputs larger than the exemplar")."""
    (height, width), (ex_height, ex_width) = size, exemplar.shape[-2:]
    if height % ex_height == 0 and width % ex_width == 0:  # a multiple of any period of the exemplar
        return None
    (period_h, period_w), repeats = periodicity(exemplar)
    if not repeats or (height % period_h == 0 and width % period_w == 0):
        return None
    return period_h, period_w


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
