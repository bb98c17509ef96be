"""Same seed, same image? Two runs of each recipe with and without deterministic kernels.

For each recipe and size, two same-seed runs of ``--steps`` L-BFGS steps with
``deterministic_on_gpu`` on (the default) and two with it off; prints whether the two
outputs are identical, their largest pixel difference, and each run's seconds per
evaluation (the first run of a process includes its warm-up). On a CPU both settings are
identical (its kernels are deterministic); the question is for GPUs.

    python benchmarks/determinism.py --device cuda --sizes 256 512 1024
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import texsynth
from texsynth.api import fit
from texsynth.examples import load_example
from texsynth.losses.registry import list_losses

RECIPES = {
    "weight_free": {"preset": "weight_free"},
    "vgg19": {"preset": "vgg19", "weights": "random"},
    "every loss": {"preset": "weight_free", "losses": {name: 1.0 for name in list_losses()}},
}


def run(options: dict, size: int, steps: int, accelerator: str, deterministic: bool) -> tuple[torch.Tensor, float]:
    module = texsynth.TextureSynthesis(load_example("bricks", size=size), seed=3, **options)
    start = time.perf_counter()
    fit(module, steps, logdir=False, progress_bar=False, quiet=True, accelerator=accelerator,
        deterministic_on_gpu=deterministic)
    return module.output().cpu(), (time.perf_counter() - start) / max(module.num_evals, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    accelerator = "gpu" if args.device == "cuda" else args.device
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}; two same-seed runs of {args.steps} steps each")
    print("| recipe | size | deterministic kernels | identical | max abs. difference | s / evaluation (run 1, run 2) |")
    print("|---|---|---|---|---|---|")
    for recipe in args.recipes:
        for size in args.sizes:
            for deterministic in (False, True):
                (a, time_a), (b, time_b) = (run(RECIPES[recipe], size, args.steps, accelerator, deterministic)
                                            for _ in range(2))
                print(f"| {recipe} | {size} | {'on' if deterministic else 'off'} | {torch.equal(a, b)} | "
                      f"{float((a - b).abs().max()):.2e} | {time_a:.4f}, {time_b:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
