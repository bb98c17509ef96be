"""Cost and accuracy of an evaluation at each numeric precision, on any device.

For each recipe and size, one ``TextureSynthesis`` evaluation (backbone forward, losses,
backward to the image) is timed in a bare loop under each setting, repetitions interleaved
and the best kept (the median alongside):

- ``fp32``: everything in float32 (the default);
- ``bf16-mixed``: the backbone under autocast in bfloat16, every loss's statistics in float32
  (``--precision bf16-mixed``);
- ``matmul-medium``: float32 tensors, matrix products rounded to bfloat16 inside the kernels
  (``--matmul-precision medium``; TF32 at ``high`` on CUDA);
- ``channels-last``, ``cudnn-benchmark`` and ``compile`` (not run unless named in
  ``--settings``): the backbone's weights and the image in ``torch.channels_last`` memory
  format; cuDNN timing its convolution algorithms for these shapes and keeping the fastest
  (``torch.backends.cudnn.benchmark``, Lightning's ``Trainer(benchmark=True)``); the whole
  evaluation under ``torch.compile`` (the compiling time is printed separately).
  Settings join with ``+``: ``bf16-mixed+cudnn-benchmark``.

Accuracy: the loss and its gradient at the same image, relative to ``fp32`` (a line search
needs losses that differ by more than this near convergence). ``--device cuda`` measures a
GPU (what the issue's "evaluations per second at 512 and 1024" asks); VGG19 uses random
weights (the cost of a convolution does not depend on its weights).

    python benchmarks/precision.py --sizes 256 512
    python benchmarks/precision.py --device cuda --sizes 512 1024 --recipes weight_free vgg19
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

import texsynth
from texsynth.callbacks import MatmulPrecision
from texsynth.examples import load_example

SETTINGS = ("fp32", "bf16-mixed", "matmul-medium", "channels-last", "cudnn-benchmark", "compile")
DEFAULT_SETTINGS = SETTINGS[:3]  # compiling the weight-free backbone took over 10 min on a 2-core CPU
RECIPES = {"weight_free": {"preset": "weight_free"},
           "vgg19": {"preset": "vgg19", "weights": "random"}}


def setting_context(setting: str, module: torch.nn.Module, device: torch.device) -> contextlib.AbstractContextManager:
    if "+" in setting:
        stack = contextlib.ExitStack()
        for part in parts(setting):
            stack.enter_context(setting_context(part, module, device))
        return stack
    if setting == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if setting == "matmul-medium":
        return _matmul_precision("medium")
    if setting == "channels-last":
        return _channels_last(module)
    if setting == "cudnn-benchmark":
        return _cudnn_benchmark()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _cudnn_benchmark():
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def parts(setting: str) -> list[str]:
    """The settings a ``+``-joined ``--settings`` entry combines."""
    return setting.split("+")


def setting_name(value: str) -> str:
    """``--settings`` entry: one of SETTINGS, or several joined with ``+``."""
    if not value or any(part not in SETTINGS for part in parts(value)):
        raise argparse.ArgumentTypeError(f"{value!r}: settings are {', '.join(SETTINGS)}, joined with '+'")
    return value


@contextlib.contextmanager
def _matmul_precision(value: str):
    callback = MatmulPrecision(value)  # what --matmul-precision installs for a run (before any stall)
    callback.setup(None, None, "fit")
    callback.on_train_start(None, None)
    try:
        yield
    finally:
        callback.teardown(None, None, "fit")


@contextlib.contextmanager
def _channels_last(module: torch.nn.Module):
    module.to(memory_format=torch.channels_last)  # the backbone's 4-D weights
    try:
        yield
    finally:
        module.to(memory_format=torch.contiguous_format)


def total_function(setting: str, module: texsynth.TextureSynthesis) -> Callable[[torch.Tensor], torch.Tensor]:
    def total(image: torch.Tensor) -> torch.Tensor:
        if "channels-last" in parts(setting):
            image = image.contiguous(memory_format=torch.channels_last)
        return module.compute_losses(image)["total"]

    return torch.compile(total) if "compile" in parts(setting) else total


def evaluation(total: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor) -> tuple[float, torch.Tensor]:
    image.grad = None
    value = total(image)
    value.backward()
    return float(value.detach()), image.grad


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=["weight_free"])
    parser.add_argument("--settings", nargs="+", type=setting_name, default=list(DEFAULT_SETTINGS),
                        help=f"any of {', '.join(SETTINGS)}, or several joined with '+'")
    parser.add_argument("--evals", type=int, default=3, help="evaluations per timed repetition")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    print(f"device: {name}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"best of {args.repeats} x {args.evals} evaluations (median alongside)")
    print("| recipe | size | setting | s / evaluation | median | evaluations / s | vs fp32 | "
          "loss rel. error | gradient rel. error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for recipe in args.recipes:
        for size in args.sizes:
            exemplar = load_example("bricks", size=size)
            module = texsynth.TextureSynthesis(exemplar, seed=0, **RECIPES[recipe]).to(device)
            image = module.image.detach().clone().requires_grad_(True)
            reference: dict[str, tuple[float, torch.Tensor]] = {}
            times: dict[str, list[float]] = {setting: [] for setting in args.settings}
            totals = {setting: total_function(setting, module) for setting in ("fp32", *args.settings)}
            for setting in totals:  # warm-up (compiling, for "compile"), and the values compared
                start = time.perf_counter()
                with setting_context(setting, module, device):
                    loss, grad = evaluation(totals[setting], image)
                reference[setting] = (loss, grad.detach().clone())
                if "compile" in parts(setting):
                    print(f"# {recipe} {size}: compiling and the first evaluation took "
                          f"{time.perf_counter() - start:.1f} s", flush=True)
            for repeat in range(args.repeats):
                order = args.settings[repeat % len(args.settings):] + args.settings[: repeat % len(args.settings)]
                for setting in order:
                    with setting_context(setting, module, device):
                        sync(device)
                        start = time.perf_counter()
                        for _ in range(args.evals):
                            evaluation(totals[setting], image)
                        sync(device)
                    times[setting].append((time.perf_counter() - start) / args.evals)
            base_loss, base_grad = reference["fp32"]
            base_time = min(times["fp32"]) if "fp32" in times else None
            for setting in args.settings:
                best, median = min(times[setting]), statistics.median(times[setting])
                loss, grad = reference[setting]
                loss_error = abs(loss - base_loss) / abs(base_loss)
                grad_error = float((grad - base_grad).norm() / base_grad.norm())
                ratio = f"{base_time / best:.2f}x" if base_time else "-"
                print(f"| {recipe} | {size} | {setting} | {best:.3f} | {median:.3f} | {1 / best:.2f} | {ratio} | "
                      f"{loss_error:.1e} | {grad_error:.1e} |", flush=True)
            del module, image
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
