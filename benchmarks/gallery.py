"""The README gallery: every bundled exemplar next to a texture synthesized from it.

    python benchmarks/gallery.py                      # docs/gallery.png, default recipe, 256x256
    python benchmarks/gallery.py --preset vgg19       # with ImageNet weights, if you have them
    python benchmarks/gallery.py --only-larger        # docs/larger.png only
    python benchmarks/gallery.py --only-cropped       # docs/cropped.png only
    python benchmarks/gallery.py --only-gallery --preset weight_free_w2 --output docs/gallery_w2.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image, ImageDraw

import texsynth
from texsynth.cli import DEFAULT_STEPS
from texsynth.image_io import to_pil

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="default: texsynth's default choice")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "gallery.png")
    parser.add_argument("--tiling-output", type=Path, default=ROOT / "docs" / "tiling.png")
    parser.add_argument("--larger-output", type=Path, default=ROOT / "docs" / "larger.png")
    parser.add_argument("--cropped-output", type=Path, default=ROOT / "docs" / "cropped.png")
    parser.add_argument("--only-tiling", action="store_true")
    parser.add_argument("--only-larger", action="store_true")
    parser.add_argument("--only-cropped", action="store_true")
    parser.add_argument("--only-gallery", action="store_true")
    args = parser.parse_args()
    only = args.only_tiling or args.only_larger or args.only_cropped or args.only_gallery
    if args.only_tiling or not only:
        tiling_figure(args)
    if args.only_larger or not only:
        larger_figure(args)
    if args.only_cropped or not only:
        cropped_figure(args)
    if only and not args.only_gallery:
        return

    pairs = []
    for name in texsynth.list_examples():
        start = time.perf_counter()
        result = texsynth.synthesize(name, steps=args.steps, preset=args.preset, seed=args.seed)
        print(f"{name}: {time.perf_counter() - start:.0f} s, {result.evals} evaluations, "
              f"loss {result.losses['total']:.4g}", flush=True)
        pairs.append((name, result.module.exemplar[0], result.image))

    tile, gap, label = 256, 6, 18
    columns = 2
    rows = (len(pairs) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (2 * tile + 3 * gap), rows * (tile + label + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (name, exemplar, output) in enumerate(pairs):
        x = (index % columns) * (2 * tile + 3 * gap)
        y = (index // columns) * (tile + label + gap)
        draw.text((x + 2, y + 2), f"{name}: exemplar | synthesized", fill="black")
        sheet.paste(to_pil(exemplar.clamp(0, 1)), (x, y + label))
        sheet.paste(to_pil(output), (x + tile + gap, y + label))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(f"wrote {args.output}")


def tiling_figure(args: argparse.Namespace) -> None:
    """A 128x128 output of `bricks` repeated 2x2, tiled (left) and untiled (right)."""
    from texsynth.metrics import seam_score

    panels = []
    for tile in (True, False):
        result = texsynth.synthesize("bricks", size=128, steps=args.steps, preset=args.preset,
                                     seed=args.seed, tile=tile)
        print(f"bricks tile={tile}: seam score {float(seam_score(result.image)):.2f}", flush=True)
        image = to_pil(result.image)
        repeated = Image.new("RGB", (256, 256))
        for dx in (0, 128):
            for dy in (0, 128):
                repeated.paste(image, (dx, dy))
        panels.append(repeated)
    figure = Image.new("RGB", (2 * 256 + 12, 256), "white")
    figure.paste(panels[0], (0, 0))
    figure.paste(panels[1], (256 + 12, 0))
    args.tiling_output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.tiling_output)
    print(f"wrote {args.tiling_output}")


def larger_figure(args: argparse.Namespace) -> None:
    """Outputs twice the exemplar's size: 128x128 exemplar | 256x256 with zero padding
    (``tile=False``) | 256x256 as texsynth makes it by default (wrapping around)."""
    size, gap, label = 256, 6, 18
    names = ("bricks", "cracks", "cells")
    figure = Image.new("RGB", (128 + 2 * size + 2 * gap, len(names) * (size + label + gap)), "white")
    draw = ImageDraw.Draw(figure)
    for row, name in enumerate(names):
        y = row * (size + label + gap)
        draw.text((2, y + 2), f"{name}: exemplar 128x128 | 256x256, tile=False | 256x256, default", fill="black")
        for column, tile in enumerate((False, None)):
            result = texsynth.synthesize(name, exemplar_size=128, size=size, steps=args.steps, preset=args.preset,
                                         seed=args.seed, tile=tile)
            print(f"{name} 128 -> 256, tile={tile}: {result.seconds:.0f} s", flush=True)
            if column == 0:
                figure.paste(to_pil(result.module.exemplar[0].clamp(0, 1)), (0, y + label))
            figure.paste(to_pil(result.image), (128 + gap + column * (size + gap), y + label))
    args.larger_output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.larger_output)
    print(f"wrote {args.larger_output}")


def cropped_figure(args: argparse.Namespace) -> None:
    """A periodic exemplar at 1.56x its size: 128x128 `bricks` | a 200x200 tile (``tile=True``) |
    200x200 as texsynth makes it by default (cut from a 224x224 tile: 7 bricks of 32)."""
    from texsynth.metrics import texture_metrics

    size, gap, label = 200, 6, 18
    figure = Image.new("RGB", (128 + 2 * size + 2 * gap, size + label), "white")
    for column, tile in enumerate((True, None)):
        result = texsynth.synthesize("bricks", exemplar_size=128, size=size, steps=args.steps, preset=args.preset,
                                     seed=args.seed, tile=tile)
        exemplar = result.module.exemplar[0].clamp(0, 1)
        metrics = {name: round(float(value), 4) for name, value in texture_metrics(result.image, exemplar).items()}
        print(f"bricks 128 -> 200, tile={tile}: image {result.module.image_size}, {result.seconds:.0f} s, "
              f"{result.evals} evaluations, {metrics}", flush=True)
        if column == 0:
            figure.paste(to_pil(exemplar), (0, label))
        figure.paste(to_pil(result.image), (128 + gap + column * (size + gap), label))
    cut_from = "x".join(map(str, result.module.image_size[::-1]))
    ImageDraw.Draw(figure).text((2, 2), f"bricks 128x128 | 200x200, tile=True | 200x200, default (cut from {cut_from})",
                                fill="black")
    args.cropped_output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.cropped_output)
    print(f"wrote {args.cropped_output}")


if __name__ == "__main__":
    main()
