"""Cost of an evaluation with each feature loss in place of the preset's Gram terms.

The weight-free default matches Gram matrices; ``mean_covariance``, ``histogram`` and
``sliced_wasserstein`` compare more of each layer's feature distribution, and pay for it per
evaluation (matrix square roots; a sort of every channel; projections and their sort). For
each size, one ``TextureSynthesis`` per loss (``losses={"gram": 0, NAME: 1}``, the preset's
other terms kept) runs whole evaluations (backbone forward, losses, backward to the image) in
a bare loop, losses interleaved, the best repetition kept (the median alongside).
``--torch-sort`` adds rows for the sorting losses with ``torch.sort`` in place of the NumPy sort
they use on CPUs (:mod:`texsynth.losses.sorting`), timed in the same rounds:

    python benchmarks/loss_cost.py --sizes 128 256 --torch-sort
    python benchmarks/loss_cost.py --device cuda --sizes 512
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

import texsynth
from precision import evaluation, sync  # the same timed evaluation as the precision table
from texsynth.losses import sorting

FEATURE_LOSSES = ("gram", "mean_covariance", "histogram", "sliced_wasserstein")
SORTING_LOSSES = ("histogram", "sliced_wasserstein")
TORCH_SORT = " (torch.sort)"


def loss_options(name: str) -> dict[str, float] | None:
    """The preset's losses with ``name`` in place of its Gram terms (None: the preset as it is)."""
    return None if name == "gram" else {"gram": 0, name: 1}


def timed_total(module: texsynth.TextureSynthesis, torch_sort: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def total(image: torch.Tensor) -> torch.Tensor:
        if not torch_sort:
            return module.compute_losses(image)["total"]
        threshold, sorting.NUMPY_SORT_MIN_ELEMENTS = sorting.NUMPY_SORT_MIN_ELEMENTS, sys.maxsize
        try:  # the graph records torch.sort, so the backward is torch's too
            return module.compute_losses(image)["total"]
        finally:
            sorting.NUMPY_SORT_MIN_ELEMENTS = threshold

    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--exemplar", default="cracks", help="bundled example name or image path")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--preset", default="weight_free")
    parser.add_argument("--losses", nargs="+", choices=FEATURE_LOSSES, default=list(FEATURE_LOSSES))
    parser.add_argument("--evals", type=int, default=2, help="evaluations per timed repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-sort", action="store_true", help="also time the sorting losses with torch.sort")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    print(f"device: {name}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"preset {args.preset}, exemplar {args.exemplar}; best of {args.repeats} x {args.evals} evaluations "
          f"(median alongside)")
    print("| feature loss | size | s / evaluation | median | vs gram |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        rows = list(args.losses)
        if args.torch_sort:
            rows += [loss + TORCH_SORT for loss in args.losses if loss in SORTING_LOSSES]
        modules = {loss: texsynth.TextureSynthesis(args.exemplar, size=size, seed=0, preset=args.preset,
                                                   losses=loss_options(loss)).to(device)
                   for loss in args.losses}
        images = {row: modules[row.removesuffix(TORCH_SORT)].image.detach().clone().requires_grad_(True)
                  for row in rows}
        totals = {row: timed_total(modules[row.removesuffix(TORCH_SORT)], row.endswith(TORCH_SORT)) for row in rows}
        for row in rows:  # warm-up: targets, first allocations
            evaluation(totals[row], images[row])
        times: dict[str, list[float]] = {row: [] for row in rows}
        for repeat in range(args.repeats):
            order = rows[repeat % len(rows):] + rows[: repeat % len(rows)]
            for loss in order:
                sync(device)
                start = time.perf_counter()
                for _ in range(args.evals):
                    evaluation(totals[loss], images[loss])
                sync(device)
                times[loss].append((time.perf_counter() - start) / args.evals)
        gram = min(times["gram"]) if "gram" in times else None
        for row in rows:
            best = min(times[row])
            ratio = f"{best / gram:.2f}x" if gram else "-"
            print(f"| {row} | {size} | {best:.3f} | {statistics.median(times[row]):.3f} | {ratio} |", flush=True)
        del modules, images, totals
    return 0


if __name__ == "__main__":
    sys.exit(main())
