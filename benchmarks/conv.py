"""Forward + backward-to-the-image time of one frozen random bank (3 -> 128 channels, "same"
padding), by kernel size and method: the library's convolution, the matrix-product backward,
and the FFT (``texsynth.backbones.fast_conv``). Side by side in one process, best of
``--repeats``; prints a Markdown table and what ``method="auto"`` picks. Then the same for
whole weight-free backbones (forward + backward to the image, as in one evaluation): every
``FastConv2d`` forced to the library's convolution vs ``auto``.

    python benchmarks/conv.py --sizes 256 512
    python benchmarks/conv.py --kernels --backbones random_pyramid random_multiscale
    python benchmarks/conv.py --device cuda --sizes 512 1024
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from texsynth.backbones import create_backbone
from texsynth.backbones.base import freeze_module
from texsynth.backbones.fast_conv import FastConv2d, auto_method
from texsynth.features import FeatureExtractor

KERNELS = (3, 5, 7, 11, 15, 23, 37, 55)
METHODS = ("direct", "matmul", "fft")
COLUMNS = {"direct": "direct", "matmul": "matmul backward", "fft": "FFT"}


def seconds(conv, image: torch.Tensor, repeats: int) -> float:
    def once() -> None:
        output = conv(image)
        (grad,) = torch.autograd.grad(output, image, torch.ones_like(output))
        float(grad[0, 0, 0, 0])  # waits for the device

    once()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--kernels", type=int, nargs="*", default=list(KERNELS))
    parser.add_argument("--backbones", nargs="*", default=["random_pyramid", "random_multiscale"])
    parser.add_argument("--filters", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="the kernel table's columns (matmul is slow on GPUs)")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {where}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if args.kernels:
        print("| size | kernel | " + " | ".join(f"{COLUMNS[m]} ms" for m in args.methods) + " | auto picks |")
        print("|---|---|" + "---|" * len(args.methods) + "---|")
    for size in args.sizes if args.kernels else ():
        image = torch.rand(1, 3, size, size, device=device, requires_grad=True)
        for k in args.kernels:
            conv = freeze_module(FastConv2d(3, args.filters, k, padding=k // 2)).to(device)
            times = {}
            for method in args.methods:
                conv.method = method
                times[method] = seconds(conv, image, args.repeats)
            auto = auto_method(image.device, (k, k), 3)
            print(f"| {size} | {k} | " + " | ".join(f"{times[m] * 1e3:.1f}" for m in args.methods) + f" | {auto} |",
                  flush=True)
    if args.backbones:
        print("\n| backbone | size | all direct s | auto s | speed-up |")
        print("|---|---|---|---|---|")
    for name in args.backbones:
        backbone = create_backbone(name).to(device)
        convs = [m for m in backbone.modules() if isinstance(m, FastConv2d)]
        taps = FeatureExtractor(backbone, backbone.texture_layers)  # every tap gets a gradient
        for size in args.sizes:
            image = torch.rand(1, 3, size, size, device=device, requires_grad=True)
            times = {"direct": [], "auto": []}
            for _ in range(args.repeats):  # interleaved
                for method in times:
                    for conv in convs:
                        conv.method = method
                    times[method].append(seconds(lambda x: sum(f.sum() for f in taps(x).values()), image, 1))
            direct, auto = min(times["direct"]), min(times["auto"])
            print(f"| {name} | {size} | {direct:.2f} | {auto:.2f} | {direct / auto:.2f} |", flush=True)


if __name__ == "__main__":
    main()
