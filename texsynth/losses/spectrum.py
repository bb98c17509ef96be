"""Fourier spectrum constraint (Liu, Gousseau & Xia 2016).

Gram statistics ignore where things are, so large-scale and periodic structure drifts. The
spectrum constraint pulls the output towards the set of images whose Fourier modulus equals
the exemplar's: the loss is half the squared distance from the output to its projection on
that set. The projection keeps the output's phase (shifted as little as possible) and takes
the exemplar's modulus.

Colour (the paper): one phase shift shared by the channels, from the channel-summed cross
spectrum S = Σ_c X_c conj(A_c), so colours stay consistent; P_c = IFFT(S / (|S|+ε) · A_c),
with S made exactly Hermitian and a fixed noise phase where |S| ≤ ε, so the loss stays continuous
where the image has (almost) no energy (:func:`hermitian_part`, :func:`tie_break_phase`).
Luminance (the reference implementation): the same on gray = 0.2989 R + 0.587 G + 0.114 B.
Chroma: the same on the two opponent-colour channels (colour without its brightness; see
:mod:`texsynth.losses.chroma_spectrum`).

The projection is treated as a constant in the backward pass: the gradient of half the
squared distance to a set is ``x − P(x)`` (the residual is normal to the set at P(x)), and
this avoids differentiating through the FFTs and the normalization.
"""

from __future__ import annotations

import math

import torch

from texsynth.errors import InvalidArgumentError
from texsynth.losses.base import Features, TextureLoss, at_least_float32
from texsynth.losses.registry import register_loss

LUMINANCE_WEIGHTS = (0.2989, 0.587, 0.114)
SPECTRUM_MODES = ("color", "luminance", "chroma")
#: how a larger output's target modulus is resampled from the exemplar's (see exemplar_spectrum)
UPSAMPLING_MODES = ("sharp", "texton")


def luminance(image: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB to ``(B, 1, H, W)`` gray with the reference's weights."""
    weights = image.new_tensor(LUMINANCE_WEIGHTS).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True)


def opponent_channels(image: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB to its two opponent-colour channels ``(B, 2, H, W)``: red − green
    and yellow − blue, orthonormal to each other and to gray (1, 1, 1), so they hold exactly
    the colour the luminance does not."""
    red, green, blue = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    return torch.cat([(red - green) / math.sqrt(2), (red + green - 2 * blue) / math.sqrt(6)], dim=1)


def spectrum_signal(image: torch.Tensor, mode: str) -> torch.Tensor:
    """What the constraint sees of an RGB image in each mode: RGB, gray, or the two
    opponent-colour channels."""
    if mode == "luminance":
        return luminance(image)
    if mode == "chroma":
        return opponent_channels(image)
    return image


def hermitian_part(spectrum: torch.Tensor) -> torch.Tensor:
    """``(Z(f) + conj(Z(−f))) / 2``: the spectrum of the real part of ``ifft2(Z)``.

    ``fft2`` of a real image is Hermitian only up to rounding. Where an image has almost no
    energy (a band-limited start), the rounding is all there is, and a phase taken from it
    differs at f and −f: the real part of the inverse transform then loses part of the
    exemplar's modulus, by an amount that a step of 1e-7 changes. Symmetrized, the phase is
    Hermitian exactly and the projection keeps the full modulus.
    """
    reversed_frequencies = torch.roll(torch.flip(spectrum, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    return 0.5 * (spectrum + reversed_frequencies.conj())


def white_noise_phase(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Unit phases of the ``fft2`` of white noise of ``shape``: Hermitian (their inverse
    transform is real) and uniformly random, so they carry no structure of their own."""
    noise = torch.fft.fft2(torch.randn(shape, generator=generator, dtype=dtype))
    return noise / noise.abs().clamp_min(1e-12)


def tie_break_phase(size: tuple[int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """``(1, 1, H, W)`` unit phases of fixed white noise, for the frequencies where the image
    has no energy at all (a constant start; a gray one for the chroma constraint).

    There every phase is equally near, so any point of the set is a projection; the eps-regularized
    ``S / (|S| + ε)`` would instead give none (P = 0 there), and the loss would count 0 for a
    distance of ``|A|²/2`` and jump when a step adds the slightest energy. Noise phases are
    Hermitian (the projection stays real) and, unlike the exemplar's own phase, copy nothing.
    """
    phase = white_noise_phase((1, 1, *size), torch.Generator().manual_seed(0), torch.float64)
    return phase.to(torch.complex64).to(device)


def spectrum_projection(
    image: torch.Tensor,
    target_spectrum: torch.Tensor,
    eps: float = 1e-11,
    tie_break: torch.Tensor | None = None,
) -> torch.Tensor:
    """Project ``image`` onto the images whose Fourier transform is ``target_spectrum`` up to
    one phase shift per frequency shared by all channels.

    Args:
        image: ``(B, C, H, W)`` real images (C = 1 for luminance, 3 for colour).
        target_spectrum: ``(1 or B, C, H, W)`` complex ``fft2`` of the exemplar (or its
            estimate at this size).
        eps: regularizer of the phase normalization.
        tie_break: ``(1, 1, H, W)`` unit phases for the frequencies where the cross spectrum's
            magnitude is at most ``eps`` (default: :func:`tie_break_phase`; pass it cached
            when projecting often).
    Returns:
        ``(B, C, H, W)`` real projection, same dtype as ``image``.
    """
    if image.shape[-3:] != target_spectrum.shape[-3:]:
        raise InvalidArgumentError(
            f"image {tuple(image.shape)} and target spectrum {tuple(target_spectrum.shape)} "
            "must have the same channels and size"
        )
    spectrum = torch.fft.fft2(at_least_float32(image))
    cross = hermitian_part((spectrum * target_spectrum.conj()).sum(dim=1, keepdim=True))
    if tie_break is None:
        tie_break = tie_break_phase(tuple(image.shape[-2:]), image.device)
    magnitude = cross.abs()
    phase = torch.where(magnitude > eps, cross / (magnitude + eps), tie_break.to(cross.dtype))
    projected = torch.fft.ifft2(phase * target_spectrum)
    return projected.real.to(image.dtype)


def periodic_component(image: torch.Tensor) -> torch.Tensor:
    """The periodic part of ``image`` (Moisan 2011, "Periodic plus smooth decomposition").

    An image's FFT treats it as periodic, so the jump between opposite borders adds a bright
    cross to its spectrum. Removing the smooth component that carries those jumps leaves an
    image whose spectrum is the texture's own.
    """
    image = at_least_float32(image)
    height, width = image.shape[-2:]
    boundary = torch.zeros_like(image)
    row_jump = image[..., -1, :] - image[..., 0, :]
    col_jump = image[..., :, -1] - image[..., :, 0]
    boundary[..., 0, :] += row_jump
    boundary[..., -1, :] -= row_jump
    boundary[..., :, 0] += col_jump
    boundary[..., :, -1] -= col_jump
    q = torch.arange(height, device=image.device, dtype=image.dtype).view(-1, 1)
    r = torch.arange(width, device=image.device, dtype=image.dtype).view(1, -1)
    denominator = 2 * torch.cos(2 * torch.pi * q / height) + 2 * torch.cos(2 * torch.pi * r / width) - 4
    denominator[0, 0] = 1.0
    smooth_hat = torch.fft.fft2(boundary) / denominator
    smooth_hat[..., 0, 0] = 0
    return image - torch.fft.ifft2(smooth_hat).real


def check_upsample(upsample: str) -> None:
    """Refuse an unknown ``upsample`` with the known ones in the message."""
    if upsample not in UPSAMPLING_MODES:
        raise InvalidArgumentError(f"spectrum upsample must be one of {', '.join(UPSAMPLING_MODES)}, got {upsample!r}")


def _bracketing_bins(out_size: int, exemplar_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each frequency bin of an ``out_size`` grid, the two bins of the ``exemplar_size`` grid
    around it (the same bin twice where it is the nearest fine bin to an exemplar bin).
    Computed on the CPU in float64 (exact for any size; MPS has no float64)."""
    fine = torch.arange(out_size)
    signed = torch.where(fine > out_size // 2, fine - out_size, fine).double()
    position = signed * exemplar_size / out_size  # in exemplar bins
    nearest = torch.round(position)
    anchored = torch.round(nearest * out_size / exemplar_size) == signed
    low = torch.where(anchored, nearest, torch.floor(position)).long() % exemplar_size
    high = torch.where(anchored, nearest, torch.floor(position) + 1).long() % exemplar_size
    return low.to(device), high.to(device)


def _box_sum(power: torch.Tensor, half_h: int, half_w: int) -> torch.Tensor:
    """Sum over a (2·half_h+1) x (2·half_w+1) window, wrapping around the frequency grid."""
    rows = sum(torch.roll(power, shift, dims=-2) for shift in range(-half_h, half_h + 1))
    return sum(torch.roll(rows, shift, dims=-1) for shift in range(-half_w, half_w + 1))


def sharp_upsampled_modulus(exemplar_modulus: torch.Tensor, texton_spectrum: torch.Tensor) -> torch.Tensor:
    """The modulus on a finer frequency grid, without the texton's sidelobes.

    Zero-padding the exemplar (the texton) interpolates its spectrum with a sinc: a sharp peak
    (a row of bricks) gets neighbours at about 2/pi of its height, and two close frequencies of
    similar strength beat, so the rows fade and return region by region. Here each exemplar
    bin keeps its value at its nearest fine bin, a bin in between takes the smallest modulus
    of the exemplar bins around it (a peak does not spread), and the result is scaled so that
    the energy of each small neighbourhood equals the texton's: the per-pixel variance is
    kept, and a peak gathers the energy its sidelobes had.

    Args:
        exemplar_modulus: ``(..., h, w)`` modulus of the exemplar's DFT, mean removed.
        texton_spectrum: ``(..., H, W)`` DFT of the zero-padded texton (mean removed), H >= h, W >= w.
    """
    height, width = exemplar_modulus.shape[-2:]
    out_h, out_w = texton_spectrum.shape[-2:]
    device = exemplar_modulus.device
    low_h, high_h = _bracketing_bins(out_h, height, device)
    low_w, high_w = _bracketing_bins(out_w, width, device)
    modulus = exemplar_modulus.clone()
    modulus[..., 0, 0] = float("inf")  # the mean is not a neighbour
    rows = torch.minimum(modulus[..., low_h, :], modulus[..., high_h, :])
    envelope = torch.minimum(rows[..., :, low_w], rows[..., :, high_w])
    envelope = torch.nan_to_num(envelope, posinf=0.0)  # the mean's own bin, whose only neighbour is itself
    texton_power = texton_spectrum.abs().pow(2)
    texton_power[..., 0, 0] = 0
    half_h, half_w = max(1, round(out_h / height)), max(1, round(out_w / width))
    ratio = _box_sum(texton_power, half_h, half_w) / _box_sum(envelope.pow(2), half_h, half_w).clamp_min(1e-30)
    sharpened = envelope * ratio.sqrt()
    mirrored = torch.roll(torch.flip(sharpened, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    return 0.5 * (sharpened + mirrored)


def exemplar_spectrum(
    exemplar: torch.Tensor,
    output_size: tuple[int, int],
    mode: str = "color",
    periodic: bool = False,
    upsample: str = "sharp",
) -> torch.Tensor:
    """The exemplar's Fourier transform at the output size.

    - Same size: ``fft2`` of the exemplar (of its periodic component if ``periodic``).
    - Smaller: ``fft2`` of the central crop (a genuine sample of the texture at that size).
    - Larger (in either dimension): the spectrum of the exemplar's periodic component, minus
      its mean, embedded in a zero image of the output size (the "texton" of random-phase
      texture synthesis, Galerne, Gousseau & Morel 2011), scaled to keep the per-pixel
      variance, with the mean restored. Its modulus is the exemplar's spectrum smoothly
      resampled to the finer frequency grid, and the relative phases of the colour channels
      are kept, so colours stay consistent. With ``upsample="sharp"`` (the default) the
      modulus is :func:`sharp_upsampled_modulus` instead: the texton's sinc interpolation
      spreads a periodic peak over neighbouring bins, and their beat makes rows of bricks fade
      region by region.
    """
    check_upsample(upsample)
    image = at_least_float32(spectrum_signal(exemplar, mode))
    height, width = image.shape[-2:]
    out_h, out_w = output_size
    crop_h, crop_w = min(height, out_h), min(width, out_w)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    image = image[..., top : top + crop_h, left : left + crop_w]
    if periodic or (out_h, out_w) != (crop_h, crop_w):
        image = periodic_component(image)
    if (out_h, out_w) == (crop_h, crop_w):
        return torch.fft.fft2(image)
    mean = image.mean(dim=(-2, -1), keepdim=True)
    texton = torch.zeros(*image.shape[:-2], out_h, out_w, dtype=image.dtype, device=image.device)
    texton[..., :crop_h, :crop_w] = image - mean
    scale = ((out_h * out_w) / (crop_h * crop_w)) ** 0.5
    spectrum = torch.fft.fft2(texton) * scale
    if upsample == "sharp":
        modulus = sharp_upsampled_modulus(torch.fft.fft2(image - mean).abs() * scale, spectrum)
        texton_modulus = spectrum.abs()
        phase = torch.where(texton_modulus > 0, spectrum / texton_modulus.clamp_min(1e-30), torch.ones_like(spectrum))
        spectrum = phase * modulus
    spectrum[..., 0, 0] = mean[..., 0, 0] * out_h * out_w
    return spectrum


@register_loss("spectrum")
class SpectrumLoss(TextureLoss):
    """½ ‖x − P(x)‖² with P the projection onto the exemplar's Fourier modulus.

    Args:
        mode: ``"color"`` (the paper: shared phase across RGB), ``"luminance"`` (the
            reference implementation) or ``"chroma"`` (the opponent-colour channels).
        eps: regularizer of the phase normalization.
        reduction: ``"sum"`` over pixels (the paper and reference) or ``"mean"`` (a value
            independent of the image size, so one weight serves every size).
        periodic: use the exemplar's periodic component (no border cross in its spectrum);
            on for tileable outputs.
        upsample: for outputs larger than the exemplar, ``"sharp"`` (periodic peaks stay in
            one frequency bin) or ``"texton"`` (the zero-padded exemplar's spectrum, Galerne et
            al. 2011); see :func:`exemplar_spectrum`.
    """

    layers = ()

    def __init__(
        self,
        mode: str = "color",
        eps: float = 1e-11,
        reduction: str = "sum",
        periodic: bool = False,
        upsample: str = "sharp",
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        check_upsample(upsample)
        self.upsample = upsample
        if reduction not in ("sum", "mean"):
            raise InvalidArgumentError(f"spectrum reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction
        self.periodic = periodic
        if mode not in SPECTRUM_MODES:
            raise InvalidArgumentError(
                f"spectrum mode must be one of {', '.join(SPECTRUM_MODES)}, got {mode!r}"
            )
        self.mode = mode
        self.eps = eps

    def set_target(self, exemplar: torch.Tensor, features: Features, output_size: tuple[int, int]) -> None:
        self.register_buffer("target", exemplar_spectrum(exemplar, output_size, self.mode, self.periodic, self.upsample), persistent=False)
        self.register_buffer("tie_break", tie_break_phase(output_size, exemplar.device), persistent=False)

    def forward(self, image: torch.Tensor, features: Features) -> torch.Tensor:
        signal = spectrum_signal(image, self.mode)
        with torch.no_grad():
            projection = spectrum_projection(signal, self.target, self.eps, self.tie_break)
        signal = at_least_float32(signal)
        squared = 0.5 * (signal - projection.to(signal.dtype)).pow(2)
        return squared.sum() if self.reduction == "sum" else squared.sum() / signal[0].numel()
