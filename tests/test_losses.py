from __future__ import annotations

import pytest
import torch

from texsynth.backbones import create_backbone
from texsynth.errors import InvalidArgumentError
from texsynth.features import FeatureExtractor
from texsynth.losses import (
    GramLoss,
    SpectrumLoss,
    create_loss,
    gram_matrix,
    list_losses,
    luminance,
    spectrum_projection,
)
from texsynth.losses.gram import GRAM_BLOCK_CHANNELS
from texsynth.losses.spectrum import exemplar_spectrum, spectrum_signal


# ---------------------------------------------------------------- Gram matrices
def test_gram_matrix_matches_an_explicit_sum():
    features = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected = torch.einsum("bchw,bdhw->bcd", features, features)
    torch.testing.assert_close(gram_matrix(features, "none"), expected)
    torch.testing.assert_close(gram_matrix(features, "4chw"), expected / (4 * 3 * 4 * 5))
    torch.testing.assert_close(gram_matrix(features, "hw"), expected / 20)
    half = gram_matrix(features.to(torch.bfloat16), "chw")
    assert half.dtype == torch.float32  # statistics are never accumulated in half precision


def test_gram_matrix_is_invariant_to_pixel_permutation_and_symmetric():
    features = torch.randn(1, 6, 8, 8)
    permuted = features.flatten(2)[..., torch.randperm(64)].view(1, 6, 8, 8)
    gram = gram_matrix(features)
    torch.testing.assert_close(gram, gram_matrix(permuted))
    torch.testing.assert_close(gram, gram.transpose(1, 2))


def test_gram_matrix_rejects_bad_input():
    with pytest.raises(InvalidArgumentError, match=r"\(B, C, H, W\).*\(3, 4\)"):
        gram_matrix(torch.zeros(3, 4))
    with pytest.raises(InvalidArgumentError, match="normalization 'bogus'"):
        gram_matrix(torch.zeros(1, 1, 2, 2), "bogus")


def test_gram_matrix_gradient_is_exact_including_second_order():
    # gram_matrix has its own backward ((dG + dGᵀ) F, one product instead of two)
    features = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: gram_matrix(f, "chw"), (features,))
    assert torch.autograd.gradgradcheck(lambda f: gram_matrix(f, "none"), (features,))
    weights = torch.randn(2, 3, 3, dtype=torch.float64)  # not symmetric: both halves of dG count
    (ours,) = torch.autograd.grad((gram_matrix(features, "none") * weights).sum(), features)
    (plain,) = torch.autograd.grad((torch.einsum("bchw,bdhw->bcd", features, features) * weights).sum(), features)
    torch.testing.assert_close(ours, plain)


@pytest.mark.parametrize("channels", [GRAM_BLOCK_CHANNELS + 1, 2 * GRAM_BLOCK_CHANNELS + 22])
def test_gram_matrix_by_block_rows_equals_the_full_product(channels):
    # on CPU, more channels than a block: only the upper triangle's block rows are multiplied
    features = torch.randn(2, channels, 3, 4, dtype=torch.float64, requires_grad=True)
    expected = torch.einsum("bchw,bdhw->bcd", features, features)
    gram = gram_matrix(features, "none")
    torch.testing.assert_close(gram, expected)
    assert torch.autograd.gradcheck(lambda f: gram_matrix(f, "none"), (features,), fast_mode=True)


def test_gram_loss_gradcheck_in_float64():
    loss = GramLoss(layers=["f"], normalization="chw")
    target = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    loss.set_target(None, {"f": target}, (3, 3))
    loss.target_f = loss.target_f.double()
    features = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)

    def value(f: torch.Tensor) -> torch.Tensor:
        flat = f.flatten(2)
        return (flat @ flat.transpose(1, 2) / 18 - loss.target_f).pow(2).sum()

    torch.testing.assert_close(loss(features, {"f": features}).double(), value(features), rtol=1e-5, atol=1e-7)
    assert torch.autograd.gradcheck(value, (features,))


def test_gram_layer_weights_forms():
    assert GramLoss(layers=["a", "b"], layer_weights=[1, 2]).layer_weights == {"a": 1.0, "b": 2.0}
    assert GramLoss(layers=["a", "b"], layer_weights={"b": 3}).layer_weights == {"a": 1.0, "b": 3.0}
    with pytest.raises(InvalidArgumentError, match="2 layers"):
        GramLoss(layers=["a", "b"], layer_weights=[1, 2, 3])
    with pytest.raises(InvalidArgumentError, match="unused layers"):
        GramLoss(layers=["a"], layer_weights={"z": 1})


def test_relative_gram_loss_is_scale_free():
    features = torch.rand(1, 4, 6, 6)
    other = torch.rand(1, 4, 6, 6)
    values = []
    for scale in (1.0, 1000.0):
        loss = GramLoss(layers=["f"], relative=True)
        loss.set_target(None, {"f": features * scale}, (6, 6))
        values.append(float(loss(other, {"f": other * scale})))
    assert values[0] == pytest.approx(values[1], rel=1e-4)


# ---------------------------------------------------------------- spectrum projection
def test_projection_has_the_target_modulus_and_is_idempotent():
    exemplar = torch.rand(1, 3, 16, 12, dtype=torch.float64)
    target = torch.fft.fft2(exemplar)
    image = torch.rand(1, 3, 16, 12, dtype=torch.float64)
    projected = spectrum_projection(image, target, eps=0.0)
    torch.testing.assert_close(torch.fft.fft2(projected).abs(), target.abs())
    torch.testing.assert_close(spectrum_projection(projected, target, eps=0.0), projected)


def test_projection_of_a_circular_shift_of_the_exemplar_is_itself():
    exemplar = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    shifted = torch.roll(exemplar, shifts=(5, -3), dims=(2, 3))
    projected = spectrum_projection(shifted, torch.fft.fft2(exemplar), eps=0.0)
    torch.testing.assert_close(projected, shifted)


def test_colour_projection_shares_one_phase_across_channels():
    """Shifting only one channel cannot be represented: the shared phase keeps colours tied."""
    exemplar = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    image = exemplar.clone()
    image[:, 0] = torch.roll(image[:, 0], 4, dims=1)
    projected = spectrum_projection(image, torch.fft.fft2(exemplar), eps=0.0)
    assert (projected - image).abs().max() > 1e-3


def test_projection_is_the_nearest_point_among_shifts():
    """Among images with the exemplar's modulus, the projection is closer than any shift."""
    torch.manual_seed(0)
    exemplar = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    image = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    projected = spectrum_projection(image, torch.fft.fft2(exemplar), eps=0.0)
    best = (image - projected).pow(2).sum()
    for dy in range(12):
        for dx in range(12):
            candidate = torch.roll(exemplar, (dy, dx), dims=(2, 3))
            assert best <= (image - candidate).pow(2).sum() + 1e-9


def test_projection_of_an_image_without_energy_has_the_target_modulus_and_copies_nothing():
    """Where the image has no energy every phase is equally near; the projection must still lie
    on the set (a real image with the target modulus), with a phase that is not the exemplar's."""
    exemplar = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    target = torch.fft.fft2(exemplar)
    projected = spectrum_projection(torch.zeros(1, 3, 16, 16, dtype=torch.float64), target)
    torch.testing.assert_close(torch.fft.fft2(projected).abs(), target.abs())
    centred = exemplar - exemplar.mean()
    correlation = (projected - projected.mean()).mul(centred).sum() / centred.pow(2).sum()
    assert abs(float(correlation)) < 0.5


@pytest.mark.parametrize("mode", ["color", "luminance", "chroma"])
def test_spectrum_loss_is_continuous_at_a_constant_image(mode):
    """A constant start (gray, for the chroma constraint) has no energy at any frequency but 0:
    the loss there is the full distance to the set, not 0, and a tiny step does not make it jump."""
    torch.manual_seed(0)
    exemplar = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    loss = SpectrumLoss(mode=mode)
    loss.set_target(exemplar, {}, (16, 16))
    constant = torch.full((1, 3, 16, 16), 0.4, dtype=torch.float64)
    nudged = constant + 1e-7 * torch.randn_like(constant)
    signal = spectrum_signal(constant, mode)
    # Parseval: ½‖x − P‖² = ½/(HW) Σ_f |X − P̂|²; |P̂| = |A| at f ≠ 0, and at f = 0 both are real.
    spectrum = torch.fft.fft2(signal)
    modulus = loss.target.abs()
    expected = 0.5 / 256 * (modulus.pow(2).sum() - modulus[..., 0, 0].pow(2).sum()
                            + (spectrum[..., 0, 0].abs() - modulus[..., 0, 0]).pow(2).sum())
    assert float(loss(constant, {})) == pytest.approx(float(expected), rel=1e-6)
    assert float(loss(nudged, {})) == pytest.approx(float(expected), rel=1e-4)


def test_spectrum_loss_is_continuous_at_a_band_limited_image():
    """With its top octave removed, an image's spectrum there is rounding noise, and fft2 of a
    real image is Hermitian only up to rounding: a phase taken from it must not make the
    projection lose modulus, which made the loss jump at a step of 1e-7 (the FFT-upsampled
    start stalled)."""
    generator = torch.Generator().manual_seed(0)
    exemplar = torch.rand((1, 3, 32, 32), generator=generator)
    spectrum = torch.fft.fft2(torch.rand((1, 3, 32, 32), generator=generator, dtype=torch.float64))
    frequencies = torch.fft.fftfreq(32).abs()
    top_octave = (frequencies.view(-1, 1) > 0.25) | (frequencies.view(1, -1) > 0.25)
    band_limited = torch.fft.ifft2(spectrum * ~top_octave).real.float()
    loss = SpectrumLoss()
    loss.set_target(exemplar, {}, (32, 32))
    nudged = band_limited + 1e-7 * torch.randn(band_limited.shape, generator=generator)
    assert float(loss(nudged, {})) == pytest.approx(float(loss(band_limited, {})), rel=1e-4)
    projected = spectrum_projection(band_limited, loss.target)
    torch.testing.assert_close(torch.fft.fft2(projected).abs(), loss.target.abs(), rtol=1e-4, atol=1e-3)


def test_luminance_weights_are_the_reference_ones():
    image = torch.zeros(1, 3, 1, 1)
    image[0, :, 0, 0] = torch.tensor([1.0, 0.5, 0.25])
    assert float(luminance(image)) == pytest.approx(0.2989 + 0.587 * 0.5 + 0.114 * 0.25)


@pytest.mark.parametrize("mode", ["color", "luminance"])
def test_spectrum_loss_value_and_gradient(mode):
    exemplar = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    loss = SpectrumLoss(mode=mode, eps=0.0)
    loss.set_target(exemplar, {}, (8, 8))
    image = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    value = loss(image, {})
    signal = luminance(image) if mode == "luminance" else image
    projected = spectrum_projection(signal.detach(), loss.target, eps=0.0)
    assert float(value.detach()) == pytest.approx(float(0.5 * (signal - projected).pow(2).sum().detach()))
    value.backward()
    # d/dx ½‖s(x) − P(s(x))‖² = Jᵀ (s − P): compare with autograd through the *exact* projection.
    image2 = image.detach().clone().requires_grad_(True)
    signal2 = luminance(image2) if mode == "luminance" else image2
    exact = 0.5 * (signal2 - spectrum_projection(signal2, loss.target, eps=0.0)).pow(2).sum()
    exact.backward()
    torch.testing.assert_close(image.grad, image2.grad, rtol=1e-6, atol=1e-8)


def test_spectrum_target_for_smaller_outputs_is_a_central_crop_and_larger_ones_are_resampled():
    exemplar = torch.rand(1, 3, 16, 16)
    crop = exemplar_spectrum(exemplar, (8, 8))
    torch.testing.assert_close(crop, torch.fft.fft2(exemplar[..., 4:12, 4:12]))
    assert exemplar_spectrum(exemplar, (32, 16)).shape == (1, 3, 32, 16)


# ---------------------------------------------------------------- contract for every loss
@pytest.fixture(scope="module")
def tiny_backbone():
    return create_backbone("random_multiscale", kernel_sizes=(3, 5), filters=4)


@pytest.mark.parametrize("name", list_losses())
def test_every_registered_loss_honours_the_contract(name, tiny_backbone):
    torch.manual_seed(0)
    loss = create_loss(name)
    loss.bind(tiny_backbone)
    extractor = FeatureExtractor(tiny_backbone, loss.layers) if loss.layers else None
    features_of = (lambda x: extractor(x)) if extractor else (lambda x: {})
    exemplar = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        loss.set_target(exemplar, features_of(exemplar), (16, 16))
    at_target = loss(exemplar, features_of(exemplar))
    # optimized images leave [0, 1]; a loss on the range is zero inside it
    image = (torch.rand(1, 3, 16, 16) * 1.4 - 0.2).requires_grad_(True)
    value = loss(image, features_of(image))
    assert value.dim() == 0 and torch.isfinite(value) and float(value.detach()) > 0
    assert at_target.dim() == 0 and abs(float(at_target)) < 1e-5 * float(value.detach()) + 1e-7
    value.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_negative_or_nan_weights_are_refused():
    for bad in (-1.0, float("nan"), float("inf"), "heavy"):
        with pytest.raises(InvalidArgumentError, match="weight of GramLoss"):
            GramLoss(weight=bad)
