"""Texture quality against wall-clock time: the reference's recipe vs texsynth's default.

Both recipes use the same backbone and losses (the weight-free default, or ``--preset``);
they differ in how they optimize:

- **reference recipe** (``../shared/SEED.md``): sigmoid-noise start, ``torch.optim.LBFGS``
  defaults (lr 1, 20 evaluations per step, history 100, no line search), full size from the
  start, ``--reference-steps`` steps (its 250 "epochs" take hours on this CPU). It runs on
  texsynth's per-evaluation cost, so its times here are *lower* than the reference
  implementation's (which also pays weight gradients and a progress-bar evaluation: see
  ``benchmarks/speed.py``).
- **texsynth default**: what ``texsynth synthesize`` does by default (the preset's init,
  coarse-to-fine stages and L-BFGS settings), ``--steps`` steps.

The image is recorded after every ``--every`` steps with its time since the start (module
construction, targets and coarse stages included) and scored afterwards with the package's
metrics (patch SWD, spectrum, LBP, colour). Quality ``q`` = geometric mean, over those four,
of metric / the reference recipe's final value: ``q <= 1`` means "as good as the reference
recipe's end result". Reported: when texsynth's default first reaches it, and the speed-up.

    python benchmarks/quality_speed.py --size 128 --limit 3
    python benchmarks/quality_speed.py --variants '{"sigmoid": {"init": "sigmoid", "coarse_levels": 0}}'
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

import texsynth
from texsynth.image_io import center_crop_resize, load_image
from texsynth.metrics import texture_metrics

HERE = Path(__file__).resolve().parent
DEFAULT_TEXTURES = HERE.parent.parent / "shared" / "textures"
METRICS = ("swd", "spectrum", "lbp", "color")
# tolerances 0: with its 1e9-weighted loss the reference never stops a step early; with the
# scale-free losses torch's default tolerances would cut its steps short
REFERENCE_RECIPE = {"init": "sigmoid", "coarse_levels": 0,
                    "lbfgs": {"lr": 1.0, "max_iter": 20, "history_size": 100, "line_search_fn": None,
                              "tolerance_grad": 0.0, "tolerance_change": 0.0}}


class Snapshots(L.Callback):
    """Keeps (seconds since ``start``, image) after every ``every`` steps of the full-size run."""

    def __init__(self, start: float, every: int) -> None:
        self.start, self.every, self.shots = start, every, []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if module.num_steps % self.every == 0 or trainer.global_step >= trainer.max_steps:
            self.shots.append((time.perf_counter() - self.start, module.num_evals, module.output()))


def run(exemplar, steps, every, options) -> list[tuple[float, int, torch.Tensor]]:
    start = time.perf_counter()
    snapshots = Snapshots(start, every)
    texsynth.synthesize(exemplar, steps=steps, seed=0, accelerator="cpu", callbacks=[snapshots], **options)
    return snapshots.shots


def quality(metrics: dict[str, float], final: dict[str, float]) -> float:
    return math.exp(statistics.fmean(math.log(max(metrics[m], 1e-9) / max(final[m], 1e-9)) for m in METRICS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--textures", type=Path, default=DEFAULT_TEXTURES)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--only", default="")
    parser.add_argument("--preset", default="weight_free")
    parser.add_argument("--reference-steps", type=int, default=60)
    parser.add_argument("--steps", type=int, default=None, help="texsynth steps (default: the CLI default)")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--variants", default="{}", help="JSON {name: synthesize options} to compare as well")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from texsynth.cli import DEFAULT_STEPS

    files = sorted(p for p in args.textures.glob("*.png"))
    if args.only:
        files = [p for p in files if p.stem in set(args.only.split(","))]
    files = files[: args.limit] if args.limit else files
    if not files:
        print(f"no exemplars in {args.textures}", file=sys.stderr)
        return 2
    recipes = {"texsynth": ({}, args.steps or DEFAULT_STEPS)}
    recipes.update({name: (options, args.steps or DEFAULT_STEPS) for name, options in json.loads(args.variants).items()})
    print(f"# {len(files)} exemplars at {args.size}x{args.size}, preset {args.preset}, {torch.get_num_threads()} "
          f"threads; reference recipe {args.reference_steps} steps")
    results = []
    for path in files:
        exemplar = center_crop_resize(load_image(path), (args.size, args.size))
        shots = run(exemplar, args.reference_steps, args.every, {"preset": args.preset, **REFERENCE_RECIPE})
        curves = {"reference": [(t, n, texture_metrics(img, exemplar)) for t, n, img in shots]}
        for name, (options, steps) in recipes.items():
            shots = run(exemplar, steps, 1, {"preset": args.preset, **options})
            curves[name] = [(t, n, texture_metrics(img, exemplar)) for t, n, img in shots]
        reference_time, _, final = curves["reference"][-1]
        row = {"texture": path.stem, "reference_seconds": reference_time, "reference_final": final}
        for name, curve in curves.items():
            reached = next(((t, n) for t, n, m in curve if quality(m, final) <= 1.0), None)
            row[name] = {"seconds": curve[-1][0], "evals": curve[-1][1], "final_q": quality(curve[-1][2], final),
                         "reached_seconds": reached[0] if reached else None,
                         "speedup": reference_time / reached[0] if reached else None,
                         "curve": [(round(t, 2), n, round(quality(m, final), 3)) for t, n, m in curve]}
        results.append(row)
        print(json.dumps({"texture": path.stem, **{name: {k: v for k, v in row[name].items() if k != "curve"}
                                                   for name in curves}}, default=str), flush=True)

    names = ["reference", *recipes]
    print(f"\n| texture | reference s | " + " | ".join(f"{n}: reached at s (speed-up) · final q" for n in names[1:]) + " |")
    print("|---|---|" + "---|" * (len(names) - 1))
    for row in results:
        cells = []
        for name in names[1:]:
            entry = row[name]
            reached = (f"{entry['reached_seconds']:.1f} ({entry['speedup']:.1f}x)" if entry["reached_seconds"]
                       else "not reached")
            cells.append(f"{reached} · {entry['final_q']:.2f}")
        print(f"| {row['texture']} | {row['reference_seconds']:.0f} | " + " | ".join(cells) + " |")
    for name in names[1:]:
        speedups = [row[name]["speedup"] for row in results if row[name]["speedup"]]
        print(f"{name}: reached the reference recipe's final quality on {len(speedups)}/{len(results)} exemplars; "
              f"median speed-up {statistics.median(speedups):.1f}x" if speedups else f"{name}: never reached")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
