"""Texture quality against wall-clock time: the reference's recipe vs texsynth's default.

Both recipes use the same backbone and losses (the weight-free default, or ``--preset``);
they differ in how they optimize:

- **reference recipe** (``../shared/SEED.md``): sigmoid-noise start, ``torch.optim.LBFGS``
  defaults (lr 1, 20 evaluations per step, history 100, no line search), full size from the
  start, ``--reference-steps`` steps (default: its 250 "epochs"; about 11 minutes per exemplar
  at 128x128 on the 2-core CPU of the README's tables), every loss weight multiplied by
  ``--reference-loss-scale`` (default 100: without a line search the recipe depends on the
  loss's scale, and this is the best of a measured sweep, see ``REFERENCE_LOSS_SCALE``). It runs on
  texsynth's per-evaluation cost, so its times here are *lower* than the reference
  implementation's (which also pays weight gradients and a progress-bar evaluation: see
  ``benchmarks/speed.py``).
- **texsynth default**: what ``texsynth synthesize`` does by default (the preset's init,
  coarse-to-fine stages and L-BFGS settings), ``--steps`` steps.

The image is recorded after every step (the reference recipe's every ``--every`` steps) with
its time since the start (module construction, targets and coarse stages included) and
scored afterwards with the package's metrics (patch SWD, spectrum, LBP, colour, and the copy
score). Quality ``q`` = geometric mean, over the first four, of metric / the reference
recipe's final value: ``q <= 1`` means "as good as the reference recipe's end result".
Reported: when each recipe first reaches it, and the speed-up.

Run long, the reference recipe drifts towards a shifted copy of the exemplar (copy score near
1), which these distances reward. So a second table excludes copies: the target is the
reference recipe's last snapshot with a copy score <= ``--max-copy`` (its best new texture),
and a recipe reaches it with ``q <= 1`` against that snapshot *and* a copy score <= ``--max-copy``;
the speed-up is against the time the reference recipe took to get there.

``--reference-cache DIR`` keeps each reference curve (per exemplar, size, steps, seed and
recipe), so variants can be compared against the full 250-step recipe without re-running it.
``--save-images DIR`` writes every recipe's final image, the reference recipe's included (a
cached curve keeps it as a PNG beside it), to look at what the numbers describe.
``--seed N`` starts both recipes from seed N: a target is one run of the reference recipe,
and another seed of it ends elsewhere.
``TEXSYNTH_KEEP_FREED_MEMORY=1`` runs both recipes with freed memory kept for reuse (the
command's default on CPU; evaluations about 1.4x cheaper here), and the cache keeps their
curves apart from those timed without it.

    python benchmarks/quality_speed.py --size 128 --limit 3 --steps 24 --reference-cache out/qs-cache
    python benchmarks/quality_speed.py --variants '{"sigmoid": {"init": "sigmoid", "coarse_levels": 0}}'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

import texsynth
from texsynth.allocator import wants_kept_memory
from texsynth.image_io import center_crop_resize, load_image, save_image
from texsynth.metrics import texture_metrics
from texsynth.presets import get_preset

HERE = Path(__file__).resolve().parent
DEFAULT_TEXTURES = HERE.parent.parent / "shared" / "textures"
METRICS = ("swd", "spectrum", "lbp", "color")
# tolerances 0: with its 1e9-weighted loss the reference never stops a step early; with the
# scale-free losses torch's default tolerances would cut its steps short. loss_scale 1: the
# reference's L-BFGS sees its losses as weighted (times --reference-loss-scale), nothing more.
REFERENCE_RECIPE = {"init": "sigmoid", "coarse_levels": 0,
                    "lbfgs": {"lr": 1.0, "max_iter": 20, "history_size": 100, "line_search_fn": None,
                              "tolerance_grad": 0.0, "tolerance_change": 0.0, "loss_scale": 1.0}}
#: Without a line search, L-BFGS depends on the loss's scale: its first step is the gradient
#: divided by its L1 norm when that exceeds 1 (else the raw gradient), and it keeps a curvature
#: pair only when y's > 1e-10. On the scale-free losses (x1) torch drops every pair for the
#: first ~100 evaluations at 128x128 and for all 5,000 at 256x256; at x1e4 and above it keeps
#: two and then crawls. Swept on blotchy_0025, bubbly_0139, cracked_0063 at 128x128 and
#: blotchy_0025 at 256x256 (loss after 100-200 evaluations), x100 was best or within 25% of the
#: best everywhere (README, Performance): the reference recipe is measured at its best scale.
REFERENCE_LOSS_SCALE = 100.0


def reference_options(preset: str, loss_scale: float) -> dict:
    """The reference recipe on ``preset``'s losses, every weight multiplied by ``loss_scale``."""
    losses = {name: {"weight": options.get("weight", 1.0) * loss_scale}
              for name, options in get_preset(preset).losses.items()}
    return {"preset": preset, "losses": losses, **REFERENCE_RECIPE}


class Snapshots(L.Callback):
    """Keeps (seconds since ``start``, image) after every ``every`` steps of the full-size run."""

    def __init__(self, start: float, every: int) -> None:
        self.start, self.every, self.shots = start, every, []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if module.num_steps % self.every == 0 or trainer.global_step >= trainer.max_steps:
            self.shots.append((time.perf_counter() - self.start, module.num_evals, module.output()))


def run(exemplar, steps, every, options, seed: int = 0) -> list[tuple[float, int, torch.Tensor]]:
    start = time.perf_counter()
    snapshots = Snapshots(start, every)
    options = {"seed": seed, **options}  # a variant may name its own seed
    result = texsynth.synthesize(exemplar, steps=steps, accelerator="cpu", callbacks=[snapshots], **options)
    seconds, evals, _ = snapshots.shots[-1]
    snapshots.shots[-1] = (seconds, evals, result.image)  # a step undone after the snapshot (max_copy_score)
    return snapshots.shots


def reference_cache_file(stem: str, args, options: dict) -> Path:
    """Where ``--reference-cache`` keeps a curve: named by exemplar, size, steps and a digest of
    the recipe, so a curve made before a preset's losses changed is not reused."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:10]
    seed = f"-seed{args.seed}" if args.seed else ""  # seed 0's curves keep their earlier names
    # a curve timed with freed memory kept is ~1.4x faster: never compared with runs without it
    kept = "-kept" if kept_memory(args.size) else ""
    return args.reference_cache / (f"{stem}-{args.size}-{args.preset}-{args.reference_steps}-{args.every}"
                                   f"-x{args.reference_loss_scale:g}{seed}{kept}-{digest}.json")


def kept_memory(size: int) -> bool:
    """Whether these runs keep freed memory for reuse (``TEXSYNTH_KEEP_FREED_MEMORY``; the
    command's default, library calls' opt-in): both recipes run under the same setting."""
    return wants_kept_memory(size * size, on_cpu=True)


def reference_curve(path: Path, exemplar: torch.Tensor, args) -> tuple[list[tuple[float, int, dict[str, float]]],
                                                                      torch.Tensor | None]:
    """The reference recipe's (seconds, evaluations, metrics) curve and final image, from
    ``--reference-cache`` if it has them (the image is kept as a PNG beside the curve; curves
    cached before that have none)."""
    options = reference_options(args.preset, args.reference_loss_scale)
    cache = None
    if args.reference_cache:
        cache = reference_cache_file(path.stem, args, options)
        if cache.exists():
            image = cache.with_suffix(".png")
            return ([tuple(entry) for entry in json.loads(cache.read_text())],
                    load_image(image) if image.exists() else None)
    shots = run(exemplar, args.reference_steps, args.every, options, args.seed)
    curve = [(t, n, texture_metrics(img, exemplar)) for t, n, img in shots]
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_image(shots[-1][2], cache.with_suffix(".png"))
        cache.write_text(json.dumps(curve))
    return curve, shots[-1][2]


def quality(metrics: dict[str, float], final: dict[str, float]) -> float:
    return math.exp(statistics.fmean(math.log(max(metrics[m], 1e-9) / max(final[m], 1e-9)) for m in METRICS))


def summarize(curve, final, target, reference_time: float, max_copy: float) -> dict:
    """When a curve first reaches the reference's final metrics, and (copies excluded) its target's."""
    reached = next(((t, n) for t, n, m in curve if quality(m, final) <= 1.0), None)
    new_texture = next((t for t, n, m in curve if m["copy"] <= max_copy and quality(m, target[1]) <= 1.0), None) \
        if target else None
    return {"seconds": curve[-1][0], "evals": curve[-1][1], "final_q": quality(curve[-1][2], final),
            "final_copy": curve[-1][2]["copy"],
            "reached_seconds": reached[0] if reached else None,
            "speedup": reference_time / reached[0] if reached else None,
            "every_metric_seconds": next((t for t, n, m in curve if all(m[k] <= final[k] for k in METRICS)), None),
            "target_q": quality(curve[-1][2], target[1]) if target else None,
            "target_reached_seconds": new_texture,
            "target_speedup": target[0] / new_texture if new_texture else None,
            "curve": [(round(t, 2), n, round(quality(m, final), 3), {k: round(m[k], 5) for k in (*METRICS, "copy")})
                      for t, n, m in curve]}


def print_tables(results: list[dict], names: list[str], max_copy: float) -> None:
    print("\n| texture | reference: s · final copy score | " + " | ".join(
        f"{n}: reached at s (speed-up) · final q · copy" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for row in results:
        cells = [(f"{row[n]['reached_seconds']:.1f} ({row[n]['speedup']:.1f}x)" if row[n]["reached_seconds"]
                  else "not reached") + f" · {row[n]['final_q']:.2f} · {row[n]['final_copy']:.2f}" for n in names]
        print(f"| {row['texture']} | {row['reference_seconds']:.0f} · {row['reference_final']['copy']:.2f} | "
              + " | ".join(cells) + " |")
    print(f"\nCopies excluded (copy score <= {max_copy}): the reference recipe's last new texture as the target")
    print("| texture | reference: target at s | " + " | ".join(
        f"{n}: reached at s (speed-up vs the same state) · q at the end" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for row in results:
        if row["target"] is None:
            print(f"| {row['texture']} | every snapshot is a copy |" + " |" * len(names))
            continue
        cells = [(f"{row[n]['target_reached_seconds']:.1f} ({row[n]['target_speedup']:.1f}x)"
                  if row[n]["target_reached_seconds"] else "not reached") + f" · {row[n]['target_q']:.2f}"
                 for n in names]
        print(f"| {row['texture']} | {row['target_seconds']:.0f} | " + " | ".join(cells) + " |")
    for name in names:
        speedups = [row[name]["speedup"] for row in results if row[name]["speedup"]]
        print(f"{name}: reached the reference recipe's final quality on {len(speedups)}/{len(results)} exemplars"
              + (f"; median speed-up {statistics.median(speedups):.1f}x" if speedups else ""))
        speedups = [row[name]["target_speedup"] for row in results if row[name]["target_speedup"]]
        print(f"{name}: reached the reference recipe's last new texture (no copy) on {len(speedups)}/{len(results)} exemplars"
              + (f"; median speed-up {statistics.median(speedups):.1f}x" if speedups else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--textures", type=Path, default=DEFAULT_TEXTURES)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--only", default="")
    parser.add_argument("--preset", default="weight_free")
    parser.add_argument("--reference-steps", type=int, default=250)
    parser.add_argument("--reference-loss-scale", type=float, default=REFERENCE_LOSS_SCALE,
                        help="factor on every loss weight of the reference recipe (it has no line search, "
                             "so its behaviour depends on the scale; default: the best of a sweep)")
    parser.add_argument("--steps", type=int, default=None, help="texsynth steps (default: the CLI default)")
    parser.add_argument("--every", type=int, default=5, help="score the reference recipe every N steps")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of both recipes' starting images (a variant may name its own)")
    parser.add_argument("--variants", default="{}", help="JSON {name: synthesize options} to compare as well")
    parser.add_argument("--skip-default", action="store_true",
                        help="run the variants only (the default's curve from an earlier run is unchanged)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--max-copy", type=float, default=0.5,
                        help="copy score above which an image counts as a copy of the exemplar, not a new texture")
    parser.add_argument("--save-images", type=Path, help="folder for each recipe's final image (the reference recipe's too, unless its curve was cached without one)")
    parser.add_argument("--reference-cache", type=Path, default=None,
                        help="folder keeping each reference curve (per exemplar, size, preset, steps) for later runs")
    args = parser.parse_args()

    from texsynth.cli import DEFAULT_STEPS

    files = sorted(p for p in args.textures.glob("*.png"))
    if args.only:
        files = [p for p in files if p.stem in set(args.only.split(","))]
    files = files[: args.limit] if args.limit else files
    if not files:
        print(f"no exemplars in {args.textures}", file=sys.stderr)
        return 2
    recipes = {} if args.skip_default else {"texsynth": ({}, args.steps or DEFAULT_STEPS)}
    recipes.update({name: (options, args.steps or DEFAULT_STEPS) for name, options in json.loads(args.variants).items()})
    print(f"# {len(files)} exemplars at {args.size}x{args.size}, preset {args.preset}, {torch.get_num_threads()} "
          f"threads; reference recipe {args.reference_steps} steps, losses x{args.reference_loss_scale:g}; seed {args.seed}; "
          f"freed memory kept: {'yes' if kept_memory(args.size) else 'no'}")
    results = []
    for path in files:
        exemplar = center_crop_resize(load_image(path), (args.size, args.size))
        reference, reference_image = reference_curve(path, exemplar, args)
        curves = {"reference": reference}
        finals = {} if reference_image is None else {"reference": reference_image}
        for name, (options, steps) in recipes.items():
            shots = run(exemplar, steps, 1, {"preset": args.preset, **options}, args.seed)
            curves[name] = [(t, n, texture_metrics(img, exemplar)) for t, n, img in shots]
            finals[name] = shots[-1][2]
        reference_time, _, final = curves["reference"][-1]
        target = next(((t, m) for t, n, m in reversed(curves["reference"]) if m["copy"] <= args.max_copy), None)
        row = {"texture": path.stem, "reference_seconds": reference_time, "reference_final": final,
               "target_seconds": target[0] if target else None, "target": target[1] if target else None}
        for name, curve in curves.items():
            row[name] = summarize(curve, final, target, reference_time, args.max_copy)
        results.append(row)
        print(json.dumps({"texture": path.stem, **{name: {k: v for k, v in row[name].items() if k != "curve"}
                                                   for name in curves}}, default=str), flush=True)
        if args.save_images:
            args.save_images.mkdir(parents=True, exist_ok=True)
            for name, image in finals.items():
                save_image(image, args.save_images / f"{path.stem}-{args.size}-{name}.png")

    print_tables(results, list(recipes), args.max_copy)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
