"""How the reference recipe depends on the scale of its loss (why quality_speed.py uses x100).

The reference recipe is L-BFGS without a line search (lr 1). Such an L-BFGS is not invariant
to the loss's scale: its first step is the gradient divided by its L1 norm only when that norm
exceeds 1, and torch keeps a curvature pair only when y's > 1e-10 (an absolute threshold).
This script runs the recipe on the weight-free losses with every weight multiplied by each
``--scales`` factor and prints the unscaled loss after every ``--every`` steps, the number of
curvature pairs L-BFGS holds, and the patch SWD and copy score at the end:

    python benchmarks/reference_scale.py --only blotchy_0025,bubbly_0139 --size 128 --steps 10
    python benchmarks/reference_scale.py --only blotchy_0025 --size 256 --steps 5 --scales 30,100,1000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning as L

import texsynth
from texsynth.image_io import center_crop_resize, load_image
from texsynth.metrics import texture_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_speed import DEFAULT_TEXTURES, reference_options  # noqa: E402


class CurvatureLog(L.Callback):
    """(step, evaluations, seconds, unscaled loss, curvature pairs held) after every step."""

    def __init__(self, scale: float) -> None:
        self.scale, self.rows, self.start = scale, [], time.perf_counter()

    def on_train_batch_end(self, trainer, module, *args) -> None:
        optimizer = trainer.optimizers[0]
        state = optimizer.state[optimizer.param_groups[0]["params"][0]]
        self.rows.append((module.num_steps, module.num_evals, time.perf_counter() - self.start,
                          float(module.last_losses["total"]) / self.scale, len(state.get("old_dirs", []))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--textures", type=Path, default=DEFAULT_TEXTURES)
    parser.add_argument("--only", default="blotchy_0025")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--every", type=int, default=2, help="print the loss every N steps")
    parser.add_argument("--scales", default="1,10,100,1000,10000,100000")
    parser.add_argument("--preset", default="weight_free")
    args = parser.parse_args()

    print("| exemplar | size | loss scale | unscaled loss after (evaluations: loss [curvature pairs]) "
          "| s | patch SWD | copy |")
    print("|---|---|---|---|---|---|---|")
    for name in args.only.split(","):
        path = args.textures / f"{name}.png"
        if not path.is_file():
            print(f"no exemplar {path}", file=sys.stderr)
            return 2
        exemplar = center_crop_resize(load_image(path), (args.size, args.size))
        for scale in (float(s) for s in args.scales.split(",")):
            log = CurvatureLog(scale)
            result = texsynth.synthesize(exemplar, steps=args.steps, seed=0, accelerator="cpu", callbacks=[log],
                                         **reference_options(args.preset, scale))
            metrics = texture_metrics(result.image, exemplar)
            curve = ", ".join(f"{evals}: {loss:.3g} [{pairs}]" for step, evals, _, loss, pairs in log.rows
                              if step % args.every == 0 or step == log.rows[-1][0])
            print(f"| {name} | {args.size} | x{scale:g} | {curve} | {log.rows[-1][2]:.0f} | "
                  f"{metrics['swd']:.4f} | {metrics['copy']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
