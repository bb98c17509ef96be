"""Starting images for the optimization."""

from __future__ import annotations

import torch

from texsynth.errors import InvalidArgumentError

INITS = ("sigmoid", "uniform", "gaussian", "random_phase")


def initial_image(
    kind: str,
    shape: tuple[int, int, int, int],
    generator: torch.Generator,
    exemplar: torch.Tensor | None = None,
) -> torch.Tensor:
    """A ``shape`` = ``(B, 3, H, W)`` starting image drawn from ``generator`` (CPU).

    ``sigmoid``: sigmoid of standard normal noise (the reference). ``uniform``: U(0, 1).
    ``gaussian``: the exemplar's mean colour + 0.01·N(0, 1) (Heitz et al. 2021).
    ``random_phase``: the exemplar's Fourier modulus with random phase (per pixel-shift
    consistent across channels), so the spectrum is right from the start.
    """
    if kind == "sigmoid":
        return torch.sigmoid(torch.randn(shape, generator=generator))
    if kind == "uniform":
        return torch.rand(shape, generator=generator)
    if exemplar is None and kind in ("gaussian", "random_phase"):
        raise InvalidArgumentError(f"init {kind!r} needs the exemplar")
    if kind == "gaussian":
        mean = exemplar.mean(dim=(2, 3), keepdim=True).cpu()
        return mean + 0.01 * torch.randn(shape, generator=generator)
    if kind == "random_phase":
        return random_phase_noise(exemplar.cpu(), shape, generator)
    raise InvalidArgumentError(f"unknown init {kind!r}; known: {', '.join(INITS)}")


def random_phase_noise(
    exemplar: torch.Tensor, shape: tuple[int, int, int, int], generator: torch.Generator
) -> torch.Tensor:
    """Random-phase noise (Galerne, Gousseau & Morel 2011): exemplar modulus, phase of white noise."""
    from texsynth.losses.spectrum import exemplar_spectrum, white_noise_phase

    batch, _, height, width = shape
    mean = exemplar.mean(dim=(2, 3), keepdim=True)
    spectrum = exemplar_spectrum(exemplar - mean, (height, width), mode="color", periodic=True)
    phase = white_noise_phase((batch, 1, height, width), generator)
    return (torch.fft.ifft2(spectrum * phase).real + mean).float()
