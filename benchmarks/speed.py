"""Cost per loss evaluation: the hardware floor, texsynth, and the reference's recipe.

Measured side by side in one process, on the same exemplar and size, repetitions
interleaved (floor, texsynth, reference, floor, …) and the median kept, so drifts of the
machine hit every row alike:

- **floor**: the frozen backbone's forward to the deepest needed layer, backward to the
  image, and the loss arithmetic, in a bare PyTorch loop (no optimizer, no framework);
- **floor + L-BFGS**: the same closure driven by a bare ``torch.optim.LBFGS`` loop (what any
  L-BFGS synthesis must pay on top of the floor);
- **texsynth**: :class:`~texsynth.TextureSynthesis` run by a Lightning ``Trainer``
  (``texsynth.api.fit``), timed from the first to the last L-BFGS step, per evaluation;
- **reference**: the reference recipe re-expressed in plain PyTorch with the costs
  ``../shared/SEED.md`` lists: a synthesis VGG19 copy with trainable weights (its backward
  also computes weight gradients), a second copy for the exemplar, L-BFGS defaults, and one
  extra loss evaluation per epoch for the progress bar.

The reference recipe is VGG19 at its numerics (``liu2016`` preset). Without ImageNet weights
(none can be downloaded here) every VGG19 row uses the same random weights: the cost of a
convolution does not depend on its weights. ``--recipe weight_free`` times the default
weight-free recipe (floor and texsynth rows only).

    python benchmarks/speed.py                      # VGG19 / liu2016 at 256x256
    python benchmarks/speed.py --recipe weight_free
    python benchmarks/speed.py --device cuda --size 512   # every row on a GPU (texsynth via accelerator="gpu")
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

import texsynth
from texsynth.allocator import kept_memory_for_run
from texsynth.api import fit
from texsynth.examples import load_example
from texsynth.image_io import center_crop_resize, load_image
from texsynth.losses import gram_matrix
from texsynth.losses.spectrum import spectrum_projection, tie_break_phase
from texsynth.presets import torch_lbfgs_options

HERE = Path(__file__).resolve().parent
DEFAULT_EXEMPLAR = HERE.parent.parent / "shared" / "textures" / "bubbly_0139.png"
TAPS = (0, 4, 9, 18, 27, 36)  # the reference's conv1_1 and pool1..pool5
FLOOR = "floor (bare forward+backward+loss)"
TEXSYNTH = "texsynth (LightningModule + Trainer)"
REFERENCE = "reference re-expressed"
DEVICE = torch.device("cpu")  # --device


def sync() -> None:
    """Wait for queued GPU work, so the host clock measures it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


# ----------------------------------------------------------------------------- reference numerics
def vgg_features(state: dict[str, torch.Tensor], trainable: bool) -> nn.Sequential:
    """torchvision VGG19 features up to pool5 with average pooling, as the reference builds it."""
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    features.load_state_dict(state)
    for index, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            features[index] = nn.AvgPool2d(kernel_size=2, stride=2)
        if isinstance(layer, nn.ReLU):
            layer.inplace = index - 1 not in TAPS  # never overwrite a tapped activation (conv1_1)
    features = features[: TAPS[-1] + 1].eval()
    for parameter in features.parameters():
        parameter.requires_grad_(trainable)
    return features.to(DEVICE)


def taps(features: nn.Sequential, image: torch.Tensor) -> list[torch.Tensor]:
    found, x = [], image
    for index, layer in enumerate(features):
        x = layer(x)
        if index in TAPS:
            found.append(x)
    return found


def gram(f: torch.Tensor) -> torch.Tensor:
    """The reference's Gram matrix: plain autograd through ``F @ Fᵀ``."""
    _, c, h, w = f.shape
    flat = f.reshape(c, h * w)
    return flat @ flat.t() / (4 * c * h * w)


def floor_gram(f: torch.Tensor) -> torch.Tensor:
    """The same value with the cheapest known backward (one product), so the floor stays a floor."""
    return gram_matrix(f, "4chw")[0]


def gray(image: torch.Tensor) -> torch.Tensor:
    return 0.2989 * image[0, 0] + 0.587 * image[0, 1] + 0.114 * image[0, 2]


def reference_projection(luminance: torch.Tensor, exemplar_fft: torch.Tensor) -> torch.Tensor:
    """The reference's spectrum projection, as it computes it."""
    p = torch.fft.fft2(luminance) * torch.conj(exemplar_fft)
    return torch.fft.ifft2(p / (torch.abs(p) + 1e-11) * exemplar_fft).real


def floor_projection(exemplar_fft: torch.Tensor):
    """texsynth's projection arithmetic (Hermitian cross spectrum, cached tie-break phase, no
    gradient through the projection: the distance's gradient is ``x - P(x)``), so the floor
    does what texsynth's evaluation does and no more."""
    tie_break = tie_break_phase(tuple(exemplar_fft.shape[-2:]), exemplar_fft.device)
    target = exemplar_fft[None, None]

    def project(luminance: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return spectrum_projection(luminance[None, None], target, tie_break=tie_break)[0, 0]

    return project


def reference_loss(features: nn.Sequential, image: torch.Tensor, target_grams: list[torch.Tensor],
                   exemplar_fft: torch.Tensor, gram_fn=gram, projection_fn=reference_projection) -> torch.Tensor:
    gram_loss = sum(1e9 * ((gram_fn(f) - g) ** 2).sum() for f, g in zip(taps(features, image), target_grams))
    luminance = gray(image)
    projected = projection_fn(luminance, exemplar_fft)
    return gram_loss + 1e5 * 0.5 * ((luminance - projected) ** 2).sum()


# ----------------------------------------------------------------------------- the rows
def loop_seconds_per_eval(image, loss_fn, evals) -> float:
    """Bare loop: ``loss_fn().backward()`` ``evals`` times; seconds per evaluation."""
    sync()
    start = time.perf_counter()
    for _ in range(evals):
        image.grad = None
        loss_fn().backward()
    sync()
    return (time.perf_counter() - start) / evals


def lbfgs_seconds_per_eval(image, loss_fn, evals, **settings) -> float:
    """One bare ``torch.optim.LBFGS`` step of ``evals`` evaluations; seconds per evaluation."""
    settings = {**settings, "max_iter": evals, "tolerance_grad": -1.0, "tolerance_change": -1.0}
    optimizer = torch.optim.LBFGS([image], **settings)
    count = 0

    def closure():
        nonlocal count
        count += 1
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    sync()
    start = time.perf_counter()
    optimizer.step(closure)
    sync()
    return (time.perf_counter() - start) / count


def vgg_problem(state, exemplar, size, trainable=False):
    """(image, loss function) of the reference formula on VGG19 features."""
    features = vgg_features(state, trainable=trainable)
    exemplar = exemplar.to(DEVICE)
    # the reference computes its targets with a second copy of the network
    target_features = vgg_features(state, trainable=trainable) if trainable else features
    with torch.no_grad():
        targets = [gram(f) for f in taps(target_features, exemplar)]
    exemplar_fft = torch.fft.fft2(gray(exemplar))
    shape = (1, 3, size, size)
    start = torch.sigmoid(torch.randn(shape, device=DEVICE)) if trainable else torch.rand(shape, device=DEVICE)
    image = start.requires_grad_(True)
    # the floor takes texsynth's cheapest exact Gram backward and its projection's arithmetic
    gram_fn = gram if trainable else floor_gram
    projection_fn = reference_projection if trainable else floor_projection(exemplar_fft)
    return image, lambda: reference_loss(features, image, targets, exemplar_fft, gram_fn, projection_fn)


def module_problem(exemplar, **options):
    """(image, loss function, L-BFGS settings) of a texsynth recipe without Lightning."""
    module = texsynth.TextureSynthesis(exemplar, seed=0, **options).to(DEVICE)
    module._ensure_targets()
    image = module.image.detach().clone().requires_grad_(True)
    losses = list(module.loss_terms.values())
    scale = module.lbfgs_options["loss_scale"]  # the objective texsynth's closure hands L-BFGS

    def loss_fn():
        features = module.extractor(image)
        return sum(loss.weight * loss(image, features) for loss in losses) * scale

    return image, loss_fn, torch_lbfgs_options(module.lbfgs_options)


def time_floor_vgg(state, exemplar, size, evals) -> float:
    return loop_seconds_per_eval(*vgg_problem(state, exemplar, size), evals)


def time_floor_lbfgs_vgg(state, exemplar, size, evals) -> float:
    return lbfgs_seconds_per_eval(*vgg_problem(state, exemplar, size), evals)


def time_reference(state, exemplar, size, evals) -> tuple[float, float]:
    """(seconds per evaluation, seconds of the progress bar's extra evaluation).

    The reference's synthesis copy has trainable weights (its backward computes weight
    gradients), and it evaluates the loss once more per epoch for its progress bar.
    """
    image, loss_fn = vgg_problem(state, exemplar, size, trainable=True)
    per_eval = lbfgs_seconds_per_eval(image, loss_fn, evals)
    start = time.perf_counter()
    loss_fn().item()  # the progress bar's evaluation
    return per_eval, time.perf_counter() - start


def time_texsynth(exemplar, size, evals, **options) -> tuple[float, int]:
    import lightning as L

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, module, *args):
            self.start = self.start if hasattr(self, "start") else time.perf_counter()

        def on_train_batch_end(self, trainer, module, *args):
            sync()
            self.end = time.perf_counter()

    module = texsynth.TextureSynthesis(exemplar, seed=0, lbfgs={"max_iter": evals, "tolerance_grad": -1.0,
                                                                 "tolerance_change": -1.0}, **options)
    timer = Timer()
    accelerator = "gpu" if DEVICE.type == "cuda" else DEVICE.type
    fit(module, 1, logdir=False, quiet=True, progress_bar=False, accelerator=accelerator, callbacks=[timer])
    return (timer.end - timer.start) / module.num_evals, module.num_evals


def time_floor_module(exemplar, size, evals, **options) -> float:
    """The floor for any texsynth recipe: its backbone, taps and losses, no Lightning, no optimizer."""
    image, loss_fn, _ = module_problem(exemplar, **options)
    return loop_seconds_per_eval(image, loss_fn, evals)


def time_floor_lbfgs_module(exemplar, size, evals, **options) -> float:
    """The module floor driven by a bare ``torch.optim.LBFGS`` with the recipe's settings."""
    image, loss_fn, settings = module_problem(exemplar, **options)
    return lbfgs_seconds_per_eval(image, loss_fn, evals, **settings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exemplar", default=str(DEFAULT_EXEMPLAR) if DEFAULT_EXEMPLAR.exists() else "bricks")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--evals", type=int, default=6, help="evaluations per timed repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipe", choices=("liu2016", "weight_free"), default="liu2016")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: every row on the GPU")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    # with TEXSYNTH_KEEP_FREED_MEMORY=1 (or auto) texsynth's Trainer keeps freed memory for reuse
    # (texsynth.allocator); applied up front then, so every row runs under the same allocator
    kept_memory_for_run(args.size * args.size, on_cpu=args.device == "cpu")

    source = args.exemplar
    image = load_image(source) if Path(source).exists() else load_example(source, size=args.size)
    exemplar = center_crop_resize(image, (args.size, args.size))
    gpu = f", {torch.cuda.get_device_name(DEVICE)}" if DEVICE.type == "cuda" else ""
    print(f"machine: {platform.machine()} {os.cpu_count()} cores{gpu}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); exemplar {Path(source).name} at {args.size}x{args.size}; "
          f"recipe {args.recipe}; best of {args.repeats} x {args.evals} evaluations")

    rows: dict[str, list[float]] = {}
    extras: list[float] = []
    if args.recipe == "liu2016":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            state = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"]).state_dict()
        weights = Path(os.environ.get("TMPDIR", "/tmp")) / "texsynth_speed_vgg19_random.pth"
        torch.save({f"features.{k}": v for k, v in state.items()}, weights)
        options = {"preset": "liu2016", "weights": str(weights), "exemplar_size": args.size}

        def reference() -> float:
            per_eval, extra = time_reference(state, exemplar, args.size, args.evals)
            extras.append(extra)
            return per_eval

        runners = {
            FLOOR: lambda: time_floor_vgg(state, exemplar, args.size, args.evals),
            "floor + bare L-BFGS loop": lambda: time_floor_lbfgs_vgg(state, exemplar, args.size, args.evals),
            TEXSYNTH: lambda: time_texsynth(exemplar, args.size, args.evals, **options)[0],
            REFERENCE: reference,
        }
    else:
        options = {"preset": "weight_free"}
        runners = {
            FLOOR: lambda: time_floor_module(exemplar, args.size, args.evals, **options),
            "floor + bare L-BFGS (strong Wolfe)": lambda: time_floor_lbfgs_module(exemplar, args.size, args.evals,
                                                                                   **options),
            TEXSYNTH: lambda: time_texsynth(exemplar, args.size, args.evals, **options)[0],
        }
    names = list(runners)
    for repeat in range(args.repeats):  # rotate the order so no row always runs first
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            rows.setdefault(name, []).append(runners[name]())

    # the fastest repetition: interference (other tenants of a virtual machine, allocator
    # warm-up) only ever adds time; the median is printed alongside
    best = {name: min(values) for name, values in rows.items()}
    floor, ours = best[FLOOR], best[TEXSYNTH]
    print(f"{'row':40} {'s/eval':>8} {'median':>8} {'/floor':>7}")
    for name, value in best.items():
        print(f"{name:40} {value:8.3f} {statistics.median(rows[name]):8.3f} {value / floor:7.3f}")
    print(f"texsynth/floor per evaluation: {ours / floor:.3f}")
    if extras:
        # one reference epoch: 20 evaluations (L-BFGS's max_iter) + the progress bar's forward pass
        reference_epoch = best[REFERENCE] * 20 + min(extras)
        texsynth_epoch = ours * 20
        print(f"per L-BFGS iteration of 20 evaluations: reference {reference_epoch:.2f} s "
              f"(incl. {min(extras):.2f} s progress-bar evaluation), texsynth "
              f"{texsynth_epoch:.2f} s; reference/texsynth {reference_epoch / texsynth_epoch:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
