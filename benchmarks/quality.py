"""Texture quality of texsynth recipes on a folder of exemplars, against reference outputs.

For every exemplar: synthesize with each recipe (preset), compute the weight-free metrics
(texsynth.metrics), and, when a reference output ``synth_<name>.png`` exists in
``--reference``, score it the same way. Prints a table (per texture and median) and writes a
contact sheet (exemplar | reference | texsynth per recipe [| second seed]).

    python benchmarks/quality.py                       # ../shared/textures at 256x256
    python benchmarks/quality.py --size 128 --limit 4  # quicker
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

import texsynth
from texsynth.image_io import center_crop_resize, load_image, to_pil
from texsynth.metrics import copy_score, texture_metrics

HERE = Path(__file__).resolve().parent
DEFAULT_TEXTURES = HERE.parent.parent / "shared" / "textures"
DEFAULT_REFERENCE = HERE.parent.parent / "shared" / "reference"
METRICS = ("swd", "spectrum", "lbp", "color", "chroma", "copy")
#: chroma noise is a few thousandths where it is visible: printed with one more decimal
DECIMALS = {"chroma": 4}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--textures", type=Path, default=DEFAULT_TEXTURES)
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--presets", default="weight_free", help="comma-separated presets")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="L-BFGS steps (default: the CLI default)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per texture (variability check)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run from here; the metrics are the first seed's (tables over several seeds)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N exemplars")
    parser.add_argument("--only", default="", help="comma-separated exemplar names")
    parser.add_argument("--options", default="{}", help="JSON dict of extra TextureSynthesis options")
    parser.add_argument("--sheet", type=Path, default=Path("quality_sheet.png"))
    parser.add_argument("--json", type=Path, help="write all numbers here")
    args = parser.parse_args()

    from texsynth.cli import DEFAULT_STEPS

    steps = args.steps or DEFAULT_STEPS
    files = sorted(p for p in args.textures.glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if args.only:
        wanted = set(args.only.split(","))
        files = [p for p in files if p.stem in wanted]
    if args.limit:
        files = files[: args.limit]
    if not files:
        print(f"no exemplars in {args.textures}", file=sys.stderr)
        return 2
    presets = args.presets.split(",")
    extra = json.loads(args.options)
    size = (args.size, args.size)
    rows: list[dict] = []
    sheet_rows: list[list[torch.Tensor]] = []
    print(f"# {len(files)} exemplars, {args.size}x{args.size}, {steps} steps, torch threads {torch.get_num_threads()}")
    for path in files:
        exemplar = center_crop_resize(load_image(path), size)
        images = [exemplar[0]]
        reference_path = args.reference / f"synth_{path.stem}.png"
        if reference_path.exists():
            reference = center_crop_resize(load_image(reference_path), size)
            rows.append({"texture": path.stem, "method": "reference", **texture_metrics(reference, exemplar)})
            images.append(reference[0])
        for preset in presets:
            outputs = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                start = time.perf_counter()
                result = texsynth.synthesize(exemplar, steps=steps, preset=preset, seed=seed, **extra)
                seconds = time.perf_counter() - start
                outputs.append(result.image)
                if seed == args.first_seed:
                    row = {"texture": path.stem, "method": preset, **texture_metrics(result.image, exemplar),
                           "seconds": seconds, "evals": result.evals, "seed": seed}
            if len(outputs) > 1:
                row["seed_ncc"] = float(copy_score(outputs[1], outputs[0]))
            rows.append(row)
            images.extend(outputs)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        sheet_rows.append(images)

    print_table(rows)
    write_sheet(sheet_rows, args.sheet)
    print(f"contact sheet: {args.sheet}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def print_table(rows: list[dict]) -> None:
    methods = list(dict.fromkeys(row["method"] for row in rows))
    header = f"| texture | method | {' | '.join(METRICS)} | seed NCC | s/texture |"
    print("\n" + header + "\n|" + "---|" * (header.count("|") - 1))
    for row in rows:
        values = " | ".join(f"{row[m]:.{DECIMALS.get(m, 3)}f}" for m in METRICS)
        seed = f"{row['seed_ncc']:.2f}" if "seed_ncc" in row else "–"
        seconds = f"{row['seconds']:.0f}" if "seconds" in row else "–"
        print(f"| {row['texture']} | {row['method']} | {values} | {seed} | {seconds} |")
    for method in methods:
        chosen = [row for row in rows if row["method"] == method]
        medians = " | ".join(f"{statistics.median(r[m] for r in chosen):.{DECIMALS.get(m, 3)}f}" for m in METRICS)
        seeds = [r["seed_ncc"] for r in chosen if "seed_ncc" in r]
        seed = f"{statistics.median(seeds):.2f}" if seeds else "–"
        secs = [r["seconds"] for r in chosen if "seconds" in r]
        seconds = f"{statistics.median(secs):.0f}" if secs else "–"
        print(f"| **median** | {method} | {medians} | {seed} | {seconds} |")


def write_sheet(rows: list[list[torch.Tensor]], path: Path) -> None:
    tiles = [[to_pil(image) for image in row] for row in rows]
    width = max(sum(t.width + 4 for t in row) for row in tiles)
    height = sum(max(t.height for t in row) + 4 for row in tiles)
    sheet = Image.new("RGB", (width, height), "white")
    y = 0
    for row in tiles:
        x = 0
        for tile in row:
            sheet.paste(tile, (x, y))
            x += tile.width + 4
        y += max(t.height for t in row) + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


if __name__ == "__main__":
    sys.exit(main())
