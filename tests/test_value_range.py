"""The value_range loss: a penalty on pixels outside the exemplar's range."""

from __future__ import annotations

import pytest
import torch

import texsynth
from texsynth.errors import InvalidArgumentError
from texsynth.losses import ValueRangeLoss, create_loss


def _exemplar_with_ranges() -> torch.Tensor:
    """Red in [0.2, 0.6], green in [0, 1], blue in [0.5, 0.5]."""
    exemplar = torch.empty(1, 3, 4, 4)
    exemplar[:, 0] = torch.linspace(0.2, 0.6, 16).view(4, 4)
    exemplar[:, 1] = torch.linspace(0.0, 1.0, 16).view(4, 4)
    exemplar[:, 2] = 0.5
    return exemplar


def _loss(**options) -> ValueRangeLoss:
    loss = create_loss("value_range", **options)
    loss.set_target(_exemplar_with_ranges(), {}, (4, 4))
    return loss


def test_zero_inside_the_exemplars_range_and_the_mean_squared_excess_outside():
    loss = _loss()
    assert float(loss(_exemplar_with_ranges(), {})) == 0.0
    image = torch.full((1, 3, 2, 2), 0.5)
    image[0, 0, 0, 0] = 0.1    # 0.1 below red's minimum
    image[0, 0, 0, 1] = 0.9    # 0.3 above red's maximum
    image[0, 1, 1, 1] = 0.9    # inside green's [0, 1]
    image[0, 2, 1, 0] = -0.5   # 1.0 below blue's single value
    expected = (0.1**2 + 0.3**2 + 1.0**2) / 12
    assert float(loss(image, {})) == pytest.approx(expected, rel=1e-6)


def test_the_gradient_points_back_into_the_range_and_is_zero_inside():
    loss = _loss()
    image = torch.tensor([0.1, 0.4, 0.9]).view(1, 1, 1, 3).expand(1, 3, 1, 3).clone().requires_grad_(True)
    loss(image, {}).backward()
    red = image.grad[0, 0, 0]
    assert red[0] < 0 and red[1] == 0 and red[2] > 0   # descent raises 0.1, lowers 0.9
    assert torch.all(image.grad[0, 1] == 0)             # green's range is [0, 1]
    probe = (torch.rand(1, 3, 3, 3, dtype=torch.float64) * 2 - 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, {}), probe)


def test_fixed_bounds_apply_to_every_channel():
    loss = _loss(bounds=(0, 1))
    image = torch.full((1, 3, 1, 2), 0.5)
    image[0, 2, 0, 0] = 1.5     # 0.5 above 1 (the exemplar's blue, 0.5 only, is not the bound here)
    image[0, 0, 0, 1] = 0.9
    assert float(loss(image, {})) == pytest.approx(0.25 / 6)


def test_each_sample_is_penalized_on_its_own():
    loss = _loss()
    inside, outside = _exemplar_with_ranges(), _exemplar_with_ranges() + 1.0
    batch = torch.cat([inside, outside])
    assert float(loss(batch, {})) == pytest.approx(float(loss(outside, {})))


@pytest.mark.parametrize("bounds", [(1, 0), (0.5, 0.5), ("low", 1), (0, float("nan")), "image", "01", 3])
def test_bad_bounds_are_refused_with_their_value(bounds):
    with pytest.raises(InvalidArgumentError, match=r"value_range bounds must be .*got"):
        create_loss("value_range", bounds=bounds)


def test_synthesis_with_the_term_stays_close_to_the_exemplars_range():
    # an exemplar of two grey levels, 0.2 and 0.8: matching its statistics overshoots both
    generator = torch.Generator().manual_seed(0)
    blocks = (torch.rand(1, 3, 8, 8, generator=generator) > 0.5).float()
    exemplar = torch.nn.functional.interpolate(blocks, size=32, mode="nearest")[0] * 0.6 + 0.2
    options = {"preset": "weight_free", "steps": 4, "coarse_levels": 0, "seed": 0, "accelerator": "cpu"}

    def worst_excess(image: torch.Tensor) -> float:
        return float(torch.maximum(0.2 - image, image - 0.8).max())

    free = texsynth.synthesize(exemplar, losses={"value_range": 0}, **options).module.image.detach()
    bounded = texsynth.synthesize(exemplar, **options).module.image.detach()  # the preset's term, weight 1
    assert worst_excess(free) > 0.2
    assert worst_excess(bounded) < worst_excess(free) / 5
