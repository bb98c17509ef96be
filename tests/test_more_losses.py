"""The math of the sliced Wasserstein, mean/covariance, histogram, colour distribution and total variation losses."""

from __future__ import annotations

import pytest
import torch

from texsynth.errors import InvalidArgumentError
from texsynth.losses import (
    ColorDistributionLoss,
    HistogramLoss,
    MeanCovarianceLoss,
    SlicedWassersteinLoss,
    TotalVariationLoss,
    total_variation,
)
from texsynth.losses.histogram import histogram_match
from texsynth.losses.mean_covariance import mean_and_covariance, psd_sqrt
from texsynth.losses.sliced_wasserstein import sliced_wasserstein
from texsynth.metrics import color_distance


def _permute_pixels(features: torch.Tensor, seed: int = 0) -> torch.Tensor:
    b, c, h, w = features.shape
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    return features.flatten(2)[..., order].view(b, c, h, w)


def _bound(loss, target: torch.Tensor):
    loss.set_target(None, {"f": target}, target.shape[-2:])
    return loss


def test_sliced_wasserstein_is_invariant_to_pixel_permutations():
    torch.manual_seed(0)
    target, features = torch.randn(1, 5, 6, 6), 2 * torch.randn(1, 5, 6, 6) + 1
    directions = torch.nn.functional.normalize(torch.randn(5, 7), dim=0)
    value = sliced_wasserstein(features, target, directions)
    torch.testing.assert_close(value, sliced_wasserstein(_permute_pixels(features), target, directions))
    assert float(sliced_wasserstein(_permute_pixels(target, 3), target, directions)) < 1e-10
    assert float(value) > 0.1


def test_sliced_wasserstein_in_one_dimension_is_the_sorted_difference():
    target = torch.tensor([3.0, 1.0, 2.0, 0.0]).view(1, 1, 2, 2)
    features = torch.tensor([0.5, 2.5, 1.5, 4.5]).view(1, 1, 2, 2)
    expected = ((torch.tensor([0.5, 1.5, 2.5, 4.5]) - torch.tensor([0.0, 1.0, 2.0, 3.0])) ** 2).mean()
    torch.testing.assert_close(sliced_wasserstein(features, target, torch.ones(1, 1)), expected)


def test_sliced_wasserstein_loss_reproducible_and_handles_other_sizes():
    target = torch.randn(1, 4, 8, 8)
    larger = torch.randn(1, 4, 12, 10)
    values = [float(_bound(SlicedWassersteinLoss(layers=["f"], seed=3), target)(larger, {"f": larger}))
              for _ in range(2)]
    assert values[0] == values[1] and values[0] > 0
    fixed = _bound(SlicedWassersteinLoss(layers=["f"], resample=False), target)
    assert float(fixed(larger, {"f": larger})) == float(fixed(larger, {"f": larger}))


def test_sliced_wasserstein_with_fixed_directions_sorts_each_target_once(monkeypatch):
    import texsynth.losses.sliced_wasserstein as module

    target, other_target, features = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.randn(1, 4, 6, 6)
    calls = []
    original = module.sorted_projections
    monkeypatch.setattr(module, "sorted_projections", lambda x, d: calls.append(x.shape) or original(x, d))
    loss = _bound(SlicedWassersteinLoss(layers=["f"], resample=False), target)
    values = [loss(features, {"f": features}) for _ in range(3)]
    assert (calls.count(target.shape), calls.count(features.shape)) == (1, 3)  # the target once
    directions = loss.directions("f", 4, features.device)
    torch.testing.assert_close(values[-1], sliced_wasserstein(features, target, directions))
    _bound(loss, other_target)  # a new exemplar: sorted again
    torch.testing.assert_close(loss(features, {"f": features}), sliced_wasserstein(features, other_target, directions))


def test_sliced_wasserstein_draws_new_directions_per_step_by_default_not_per_evaluation():
    # a strong-Wolfe line search compares probes of one function: redrawn at every evaluation
    # the loss moved under it (probes of one point differed by 6%) and L-BFGS stepped to NaN
    target, features = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    per_step = _bound(SlicedWassersteinLoss(layers=["f"]), target)
    assert per_step.resample == "step"
    within = [float(per_step(features, {"f": features})) for _ in range(3)]
    per_step.start_step()
    after = float(per_step(features, {"f": features}))
    assert within[0] == within[1] == within[2] != after
    directions = per_step.directions("f", 4, features.device)  # the target is sorted anew for them
    torch.testing.assert_close(per_step(features, {"f": features}), sliced_wasserstein(features, target, directions))

    per_evaluation = _bound(SlicedWassersteinLoss(layers=["f"], resample="evaluation"), target)
    assert len({float(per_evaluation(features, {"f": features})) for _ in range(3)}) == 3
    for mode, legacy in (("evaluation", True), ("never", False)):
        assert SlicedWassersteinLoss(layers=["f"], resample=legacy).resample == mode
    never = _bound(SlicedWassersteinLoss(layers=["f"], resample="never"), target)
    first = float(never(features, {"f": features}))
    never.start_step()
    assert float(never(features, {"f": features})) == first


@pytest.mark.parametrize(("options", "named"), [
    ({"resample": "always"}, "resample"), ({"resample": 1}, "resample"),
    ({"num_directions": 0}, "num_directions"), ({"num_directions": 2.5}, "num_directions"),
    ({"layer_weights": "abc"}, "layer 'f'"), ({"layer_weights": [float("nan")]}, "layer 'f'"),
    ({"layer_weights": {"f": -1}}, "layer 'f'"),
])
def test_sliced_wasserstein_options_are_checked_up_front(options, named):
    with pytest.raises(InvalidArgumentError, match=named):
        SlicedWassersteinLoss(layers=["f"], **options)


def test_one_layer_may_be_named_by_a_string():
    # tuple("level0") would be its letters, each an unknown layer
    assert SlicedWassersteinLoss(layers="level0").layers == ("level0",)
    assert HistogramLoss(layers="relu1_1", layer_weights=2).layer_weights == {"relu1_1": 2.0}


def test_mean_covariance_matches_the_closed_form_in_one_dimension():
    target = torch.randn(1, 1, 5, 5, dtype=torch.float64) * 2 + 1
    features = torch.randn(1, 1, 5, 5, dtype=torch.float64) * 0.5 - 1
    loss = _bound(MeanCovarianceLoss(layers=["f"]), target)
    value = loss(features, {"f": features})

    def stats(x):
        mean = x.mean()
        return mean, ((x - mean).pow(2).mean() + 1e-4).sqrt()

    (m1, s1), (m2, s2) = stats(features), stats(target)
    torch.testing.assert_close(value.double(), (m1 - m2) ** 2 + (s1 - s2) ** 2)


def test_mean_covariance_is_permutation_invariant_and_sees_the_mean():
    target = torch.rand(1, 3, 6, 6)
    loss = _bound(MeanCovarianceLoss(layers=["f"]), target)
    assert float(loss(_permute_pixels(target), {"f": _permute_pixels(target)})) < 1e-6
    shifted = target + 0.5
    assert float(loss(shifted, {"f": shifted})) == pytest.approx(0.25, rel=1e-3)  # mean term only


def test_psd_sqrt_squares_back():
    a = torch.randn(4, 4, dtype=torch.float64)
    spd = a @ a.t() + torch.eye(4, dtype=torch.float64)
    root = psd_sqrt(spd)
    torch.testing.assert_close(root @ root, spd)
    _, covariance = mean_and_covariance(torch.randn(1, 3, 4, 4))
    assert torch.linalg.eigvalsh(covariance).min() >= 1e-4 * 0.99


def test_histogram_match_gives_exactly_the_target_values_in_the_current_order():
    target = torch.randn(1, 2, 4, 4)
    features = torch.randn(1, 2, 4, 4)
    sorted_target = torch.sort(target.flatten(2), dim=-1).values
    matched = histogram_match(features, sorted_target)
    torch.testing.assert_close(torch.sort(matched.flatten(2), dim=-1).values, sorted_target)
    # order preserved: the largest current value gets the largest target value
    assert torch.equal(torch.argsort(matched.flatten(2)), torch.argsort(features.flatten(2)))


def test_histogram_match_by_one_sort_equals_the_rank_formulation_ties_included():
    # ReLU features hold many equal zeros; the exemplar quantiles go where the ranks say
    from texsynth.losses.sliced_wasserstein import match_length

    features = torch.relu(torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(0)))
    sorted_target = torch.sort(torch.rand(1, 3, 40), dim=-1).values
    flat = features.flatten(2)
    ranks = torch.argsort(torch.argsort(flat, dim=-1), dim=-1)
    expected = torch.gather(match_length(sorted_target, flat.shape[-1]).expand(2, -1, -1), -1, ranks)
    matched = histogram_match(features, sorted_target).flatten(2)
    torch.testing.assert_close(torch.sort(matched, dim=-1).values, torch.sort(expected, dim=-1).values)
    # tied inputs may swap their quantiles, nothing else moves
    torch.testing.assert_close(matched[flat > 0], expected[flat > 0])


def test_histogram_loss_zero_for_any_permutation_of_the_exemplar():
    target = torch.rand(1, 3, 5, 5)
    loss = _bound(HistogramLoss(layers=["f"]), target)
    permuted = _permute_pixels(target)
    assert float(loss(permuted, {"f": permuted})) < 1e-10
    other = torch.rand(1, 3, 5, 5) * 2
    assert float(loss(other, {"f": other})) > 0.01


def test_total_variation_values():
    flat = torch.full((2, 3, 6, 6), 0.3)
    assert torch.equal(total_variation(flat), torch.zeros(2))
    stripes = torch.zeros(1, 1, 2, 4)
    stripes[..., ::2] = 1.0  # every horizontal neighbour differs by 1
    assert float(total_variation(stripes)) == pytest.approx(1.0)
    regularizer = TotalVariationLoss(target=None)
    regularizer.set_target(flat[:1], {}, (6, 6))
    noisy = torch.rand(1, 3, 6, 6)
    assert float(regularizer(noisy, {})) > float(regularizer(flat[:1], {}))


def _color_loss(exemplar: torch.Tensor, **options) -> ColorDistributionLoss:
    loss = ColorDistributionLoss(**options)
    loss.set_target(exemplar, {}, tuple(exemplar.shape[-2:]))
    return loss


def test_color_distribution_sees_colours_not_their_places():
    exemplar = torch.rand(1, 3, 8, 8)
    loss = _color_loss(exemplar)
    assert float(loss(_permute_pixels(exemplar), {})) < 1e-12
    tiled = exemplar.repeat(1, 1, 2, 3)  # another size, the same distribution: compared by quantiles
    assert float(loss(tiled, {})) < 1e-3
    shifted = (exemplar + 0.1).clamp(0, 1)
    assert float(loss(shifted, {})) > 1e-3
    batch = torch.cat([_permute_pixels(exemplar), shifted])
    torch.testing.assert_close(loss(batch, {}), loss(shifted, {}))  # samples add up independently


def test_color_distribution_gradient_descent_matches_the_colour_distance():
    torch.manual_seed(0)
    exemplar = torch.rand(1, 3, 16, 16) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)  # orange-ish
    image = torch.full((1, 3, 16, 16), 0.5, requires_grad=True)
    loss = _color_loss(exemplar)
    before = float(color_distance(image.detach(), exemplar))
    optimizer = torch.optim.Adam([image], lr=0.02)
    for _ in range(100):
        optimizer.zero_grad()
        value = loss(image, {})
        value.backward()
        optimizer.step()
    assert float(color_distance(image.detach().clamp(0, 1), exemplar)) < 0.2 * before  # as an output is saved


def test_color_distribution_same_directions_for_a_seed_and_bad_counts_rejected():
    exemplar, image = torch.rand(1, 3, 6, 6), torch.rand(1, 3, 6, 6)
    assert float(_color_loss(exemplar, seed=1)(image, {})) == float(_color_loss(exemplar, seed=1)(image, {}))
    assert float(_color_loss(exemplar, seed=1)(image, {})) != float(_color_loss(exemplar, seed=2)(image, {}))
    with pytest.raises(InvalidArgumentError, match="num_directions"):
        ColorDistributionLoss(num_directions=0)
