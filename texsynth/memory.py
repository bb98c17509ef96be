"""A memory guard: refuse a synthesis that cannot fit, before it is killed by the OS.

The estimate counts what scales with the output's pixels: the backbone's activations up to
the deepest tap (measured once on a small probe image and scaled by area: the tensors autograd
saves for the backward pass — with gradient checkpointing, the tapped activations plus the
largest recomputed segment — plus two tensors the size of the largest of them, its gradient
and one working copy, alive during the backward pass), the L-BFGS history (two
image-sized vectors per remembered step, bounded by the module, plus a few working copies)
and the image itself. Nothing else grows with the output size: Gram matrices and targets
depend on channel counts only.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from texsynth._logging import log
from texsynth.allocator import kept_free_bytes
from texsynth.errors import InvalidArgumentError

PROBE = 64
BYTES_PER_FLOAT = 4
GIB = 1024**3


def activation_floats_per_pixel(extractor: nn.Module | None) -> float:
    """Peak floats per input pixel of one forward + backward pass through the backbone.

    Without checkpointing: what autograd saves up to the deepest tap (taps included) plus
    twice the largest saved tensor (its gradient and a working copy exist at once in the
    backward pass; measured: VGG19 and the weight-free pyramid at 2048x2048 within 10%).
    With checkpointing, what is saved is the tapped outputs plus, while one segment is
    recomputed, that segment's outputs.
    """
    if extractor is None:
        return 0.0
    saved = _checkpointed_floats(extractor) if getattr(extractor, "checkpointing", False) else _saved_floats(extractor)
    return (sum(saved) + 2 * max(saved, default=0)) / PROBE**2


def _probe(extractor: nn.Module) -> torch.Tensor:
    device = next(iter(extractor.model.buffers()), torch.zeros(())).device
    return torch.zeros(1, 3, PROBE, PROBE, device=device)


def _saved_floats(extractor: nn.Module) -> list[int]:
    """Count, on a probe, the tensors autograd saves for the backward pass (each storage
    once; the backbone's own weights excluded: they do not grow with the pixels)."""
    weights = {t.untyped_storage().data_ptr() for t in (*extractor.buffers(), *extractor.parameters())}
    kept: dict[int, int] = {}

    def remember(tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes() // tensor.element_size()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        remember(tensor)
        return tensor

    image = _probe(extractor).requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        features = extractor(image)
    for tensor in features.values():
        remember(tensor)
    return list(kept.values())


def _checkpointed_floats(extractor: nn.Module) -> list[int]:
    """Sizes of the tapped outputs and of the outputs of the largest run between two taps
    (recomputed at once in the backward pass)."""
    tapped: list[int] = []
    taps = set(extractor.tapped_modules.values())
    segment: list[int] = []
    largest_segment: list[int] = []

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal segment, largest_segment
        if not isinstance(output, torch.Tensor):
            return
        if inputs and isinstance(inputs[0], torch.Tensor) and output.data_ptr() == inputs[0].data_ptr():
            return  # an in-place layer (ReLU) allocates nothing
        if module in taps:
            tapped.append(output.numel())
            segment = []
            return
        segment.append(output.numel())
        if sum(segment) > sum(largest_segment):
            largest_segment = list(segment)

    leaves = [m for m in extractor.model.modules() if not list(m.children()) or m in taps]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            extractor(_probe(extractor))
    finally:
        for handle in handles:
            handle.remove()
    return tapped + largest_segment


def estimate_bytes(module: Any) -> int:
    """Approximate peak bytes of one loss evaluation plus the optimizer state."""
    height, width = module.image_size
    pixels = height * width * module.variations
    activations = activation_floats_per_pixel(module.extractor) * pixels
    history = module.lbfgs_options["history_size"]
    lbfgs = (2 * history + 6) * pixels * 3
    return int((activations + lbfgs + 4 * pixels * 3) * BYTES_PER_FLOAT)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (None when it cannot be told)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024 + kept_free_bytes()
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") + kept_free_bytes()
        except (ValueError, OSError, AttributeError):
            return None
    return None


def size_label(output_size: tuple[int, int], variations: int) -> str:
    """``WxH (xK)``: how messages about an output's memory name it."""
    height, width = output_size
    return f"{width}x{height} (x{variations})"


#: image-sized tensors a module holds from construction: the image and its last good copy
IMAGE_COPIES = 2


def size_description(output_size: tuple[int, int], variations: int, image_size: tuple[int, int]) -> str:
    """``output size WxH (xK)``, and the tile it is cut from when the optimized image is larger."""
    text = f"output size {size_label(output_size, variations)}"
    if tuple(image_size) != tuple(output_size):
        text += f" (cut from a {image_size[1]}x{image_size[0]} tile)"
    return text


def check_image_fits(output_size: tuple[int, int], variations: int, image_size: tuple[int, int]) -> None:
    """Refuse an output whose image (of ``image_size``: the output's, or the tile it is cut from)
    alone cannot fit in CPU memory, where the module builds it, before allocating it (the full
    estimate, :func:`check_memory`, needs the built module)."""
    height, width = image_size
    needed = IMAGE_COPIES * variations * 3 * height * width * BYTES_PER_FLOAT
    limit = available_bytes(torch.device("cpu"))
    if limit is not None and needed > limit:
        raise InvalidArgumentError(
            f"{size_description(output_size, variations, image_size)}: its image alone needs {needed / GIB:.1f} GiB of "
            f"CPU memory, but only {limit / GIB:.1f} GiB is available; use a smaller --size or fewer --variations"
        )


def check_memory(module: Any, device: torch.device, allow_checkpointing: bool = False) -> None:
    """Raise a clear error if the synthesis would need more memory than ``device`` has.

    With ``allow_checkpointing``, first try gradient checkpointing of the backbone.
    """
    limit = available_bytes(device)
    if limit is None:
        return
    needed = estimate_bytes(module)
    extractor = module.extractor
    if (needed > limit and allow_checkpointing and extractor is not None and not extractor.checkpointing
            and extractor.supports_checkpointing):
        extractor.enable_checkpointing()
        without, needed = needed, estimate_bytes(module)
        log.info("gradient checkpointing on: about %.1f GiB instead of %.1f GiB (%.1f GiB free on %s)",
                 needed / GIB, without / GIB, limit / GIB, device.type)
    if needed > limit:
        raise InvalidArgumentError(
            f"{size_description(module.output_size, module.variations, module.image_size)} needs about "
            f"{needed / GIB:.1f} GiB on "
            f"{device.type}, but only {limit / GIB:.1f} GiB is available; use a smaller --size, "
            "fewer --variations, or a backbone that supports gradient checkpointing (vgg19)"
        )
