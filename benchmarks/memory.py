"""Peak memory of one synthesis step at large output sizes (CPU or GPU).

Each size runs in a fresh process (peak resident memory, ``ru_maxrss``, only grows) that
builds the module, computes the targets and runs one L-BFGS step of ``--evals``
evaluations, then prints its peak, its growth during the run (peak minus its size before the
run: what the guard's estimate, :mod:`texsynth.memory`, models) and the estimate. With
``--accelerator gpu`` the peak is the CUDA caching allocator's (``max_memory_allocated``:
tensors, not the allocator's reserve or the CUDA context) and the growth is the same number.

    python benchmarks/memory.py                          # 512, 1024, 2048 with the default recipe
    python benchmarks/memory.py --sizes 1024 --options '{"checkpointing": false}'
    python benchmarks/memory.py --accelerator gpu --sizes 1024,2048,4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

GIB = 1024**3


def child(size: int, evals: int, options: dict, accelerator: str, precision: str) -> None:
    import torch

    import texsynth
    from texsynth.api import fit
    from texsynth.memory import estimate_bytes

    module = texsynth.TextureSynthesis("bricks", size=size, exemplar_size=256, seed=0,
                                       lbfgs={"max_iter": evals, **options.pop("lbfgs", {})}, **options)
    gpu = accelerator != "cpu"
    before = 0 if gpu else _resident_bytes()  # PyTorch, the backbone, the exemplar: in use when the guard looks
    start = time.perf_counter()
    fit(module, 1, logdir=False, quiet=True, progress_bar=False, accelerator=accelerator, precision=precision)
    seconds = time.perf_counter() - start
    # ru_maxrss is in kilobytes on Linux
    peak = torch.cuda.max_memory_allocated() if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"size": size, "peak": peak, "before": before, "estimate": estimate_bytes(module),
                      "evals": module.num_evals, "seconds": seconds, "history": module.lbfgs_options["history_size"],
                      "finite": bool(torch.isfinite(module.image).all())}))


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--evals", type=int, default=3, help="evaluations in the one L-BFGS step")
    parser.add_argument("--options", default="{}", help="JSON TextureSynthesis options")
    parser.add_argument("--accelerator", default="cpu", help="cpu, or gpu (peak of the CUDA allocator)")
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.evals, json.loads(args.options), args.accelerator, args.precision)
        return 0
    print(f"{os.cpu_count()} cores, {args.accelerator}, {args.precision}; options {args.options}; "
          f"one L-BFGS step of {args.evals} evaluations")
    # the guard compares its estimate with the memory still available when the run starts, so
    # "growth" (peak minus the process's size before the run) is what the estimate models
    print(f"{'size':>6} {'peak GiB':>9} {'growth GiB':>11} {'estimate GiB':>13} {'history':>8} {'s/eval':>7}")
    for size in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run([sys.executable, __file__, "--child", str(size), "--evals", str(args.evals),
                               "--options", args.options, "--accelerator", args.accelerator,
                               "--precision", args.precision],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{size:>6} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{size:>6} {row['peak'] / GIB:9.2f} {(row['peak'] - row['before']) / GIB:11.2f} "
              f"{row['estimate'] / GIB:13.2f} {row['history']:>8} "
              f"{row['seconds'] / row['evals']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
