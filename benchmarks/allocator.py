"""Cost per evaluation with glibc's default allocator vs freed memory kept for reuse.

With ``TEXSYNTH_KEEP_FREED_MEMORY=1`` texsynth keeps freed memory for reuse
(``texsynth.allocator``; opt-in, it raises peak memory at large sizes); this script switches
glibc's thresholds back and forth in one process and times the same evaluations under each,
interleaved, with the page faults they cause.

    python benchmarks/allocator.py --size 256 --repeats 4
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from texsynth.allocator import GLIBC_DEFAULT_THRESHOLD, KEEP_BLOCKS_UP_TO, set_malloc_thresholds
from texsynth.examples import load_example
from texsynth.module import TextureSynthesis

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--preset", default="weight_free")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--evals", type=int, default=4)
    args = parser.parse_args()
    if not set_malloc_thresholds(GLIBC_DEFAULT_THRESHOLD):
        raise SystemExit("allocator.py: glibc's allocator only (Linux)")
    weights = {"weights": "random"} if args.preset in ("vgg19", "liu2016") else {}  # costs what ImageNet's do
    module = TextureSynthesis(load_example("cracks", size=args.size), size=args.size, seed=0, preset=args.preset,
                              **weights)

    def evaluate(count: int) -> tuple[float, float]:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(count):
            module.image.grad = None
            module.compute_losses()["total"].backward()
        seconds = (time.perf_counter() - start) / count
        return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / count

    evaluate(2)
    times: dict[bool, list[float]] = {False: [], True: []}
    faults: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for keep in (False, True):
            set_malloc_thresholds(KEEP_BLOCKS_UP_TO if keep else GLIBC_DEFAULT_THRESHOLD)
            evaluate(1)  # settle into the new setting
            seconds, count = evaluate(args.evals)
            times[keep].append(seconds)
            faults[keep].append(count)
    print(f"# {args.preset} at {args.size}x{args.size}, torch threads {torch.get_num_threads()}, "
          f"best / median of {args.repeats} x {args.evals} evaluations")
    print("| allocator | s / evaluation (best) | median | page faults / evaluation |")
    print("|---|---|---|---|")
    for keep, label in ((False, "glibc defaults"), (True, "freed memory kept (opt-in)")):
        ordered = sorted(times[keep])
        print(f"| {label} | {ordered[0]:.3f} | {ordered[len(ordered) // 2]:.3f} | {sorted(faults[keep])[len(ordered) // 2]:,.0f} |")
    print(f"speed-up (best): {min(times[False]) / min(times[True]):.2f}x")


if __name__ == "__main__":
    main()
