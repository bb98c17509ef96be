"""The colour-only spectrum constraint: blind to brightness, sees colour noise, fades on
colourful exemplars, and removes speckle from a gray exemplar's synthesis."""

from __future__ import annotations

import pytest
import torch

from texsynth import synthesize
from texsynth.errors import InvalidArgumentError
from texsynth.losses import ChromaSpectrumLoss, SpectrumLoss, create_loss, opponent_channels, spectrum_projection
from texsynth.losses.chroma_spectrum import GRAY_LEVEL
from texsynth.metrics import chroma_noise


def _gray(size: int = 16, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, size, size, generator=generator, dtype=dtype).expand(1, 3, size, size).clone()


def _bound(loss: SpectrumLoss, exemplar: torch.Tensor) -> SpectrumLoss:
    loss.set_target(exemplar, {}, tuple(exemplar.shape[-2:]))
    return loss


def test_opponent_channels_are_orthonormal_and_blind_to_gray():
    basis = opponent_channels(torch.eye(3).view(3, 3, 1, 1)).view(3, 2)  # row c: what R, G or B gives
    torch.testing.assert_close(basis.T @ basis, torch.eye(2))
    assert opponent_channels(torch.full((1, 3, 4, 4), 0.7)).abs().max() < 1e-7


def test_on_a_gray_exemplar_the_loss_is_the_outputs_colour_energy_and_its_exact_gradient():
    loss = _bound(ChromaSpectrumLoss(), _gray())  # its target spectrum is 0: eps keeps 0/0 out
    assert loss.grayness == 1.0
    image = torch.rand(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    value = loss(image, {})
    chroma = opponent_channels(image)
    expected = 0.5 * chroma.pow(2).sum() / chroma[0].numel()
    torch.testing.assert_close(value, expected)
    (gradient,) = torch.autograd.grad(expected, image)
    value.backward()
    torch.testing.assert_close(image.grad, gradient)


def test_brightness_changes_cost_nothing_and_colour_noise_costs():
    exemplar = _gray()
    loss = _bound(ChromaSpectrumLoss(), exemplar)
    other_gray = _gray(seed=1)
    assert float(loss(other_gray, {})) < 1e-12
    speckle = torch.randn(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    tinted = exemplar + 0.01 * torch.cat([speckle, -speckle, torch.zeros_like(speckle)], dim=1)
    assert float(loss(tinted, {})) > 1e-5


def test_gradient_on_a_colourful_exemplar_is_that_of_the_distance_to_the_set():
    # half the squared distance to a set has gradient x − P(x): compare with autograd through
    # the exact projection (the loss itself treats the projection as a constant)
    exemplar = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    loss = _bound(ChromaSpectrumLoss(eps=0.0), exemplar)
    image = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    loss(image, {}).backward()
    image2 = image.detach().clone().requires_grad_(True)
    chroma = opponent_channels(image2)
    exact = 0.5 * (chroma - spectrum_projection(chroma, loss.target, eps=0.0)).pow(2).sum() / chroma[0].numel()
    (loss.grayness * exact).backward()
    torch.testing.assert_close(image.grad, image2.grad, rtol=1e-6, atol=1e-10)


def test_the_weight_fades_with_the_exemplars_colour_variance():
    gray = _gray()
    pale = gray + 0.02 * torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    vivid = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    factors = [_bound(ChromaSpectrumLoss(), e).grayness for e in (gray, pale, vivid)]
    assert factors[0] == 1.0 > factors[1] > factors[2] > 0
    variance = float(opponent_channels(vivid).var(dim=(-2, -1), correction=0).mean())
    assert factors[2] == pytest.approx(GRAY_LEVEL**2 / (GRAY_LEVEL**2 + variance))


@pytest.mark.parametrize("bad", [0, -0.1, "light"])
def test_bad_gray_level_is_refused_by_name(bad):
    with pytest.raises(InvalidArgumentError, match="gray_level"):
        create_loss("chroma_spectrum", gray_level=bad)


def test_spectrum_mode_chroma_is_listed_in_the_error_for_a_bad_mode():
    with pytest.raises(InvalidArgumentError, match="chroma"):
        SpectrumLoss(mode="hue")


def test_it_removes_colour_speckle_from_a_gray_exemplars_synthesis():
    # a gray exemplar with structure (blobs and lines); the random RGB filter banks put
    # colour noise into every step, which only the chroma constraint takes out again
    generator = torch.Generator().manual_seed(5)
    blobs = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 40, 40, generator=generator), 5, 1, padding=0)
    exemplar = ((blobs - blobs.mean()) * 6 + 0.5).clamp(0, 1)[..., :32, :32].expand(1, 3, 32, 32).contiguous()
    common = dict(size=32, steps=3, seed=0, backbone_options={"filters": 16}, coarse_levels=0)  # the loss alone
    without = synthesize(exemplar, losses={"chroma_spectrum": 0}, **common)
    with_it = synthesize(exemplar, losses={"chroma_spectrum": 10}, **common)
    # the optimized images: the outputs of a gray exemplar are gray whatever the optimization left
    optimized = [result.module.image.detach()[0].clamp(0, 1) for result in (without, with_it)]
    assert float(chroma_noise(without.image, exemplar)) == 0.0
    speckled, clean = (float(chroma_noise(image, exemplar)) for image in optimized)
    assert speckled > 3 * clean
    assert with_it.losses["gram"] < 2 * without.losses["gram"]  # the texture itself is not given up
