"""The distribution losses' sort: NumPy's argsort on CPU rows, torch.sort elsewhere."""

from __future__ import annotations

import pytest
import torch

from texsynth.losses import sorting
from texsynth.losses.histogram import histogram_match
from texsynth.losses.sorting import NUMPY_SORT_MIN_ELEMENTS, argsort_last, sort_last


def _values(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _distinct(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Shuffled values without ties (random float32 draws of this many repeat some values)."""
    count = torch.Size(shape).numel()
    return (torch.randperm(count, generator=torch.Generator().manual_seed(seed)).reshape(shape) - count / 2) / count


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_cpu_rows_sort_as_torch_does_and_differentiate_alike(dtype):
    values = _distinct((2, 3, NUMPY_SORT_MIN_ELEMENTS // 4), seed=1).to(dtype).requires_grad_(True)
    assert sorting._numpy_sorts(values)  # the NumPy path runs here
    weights = _values(values.shape, seed=2).to(dtype)
    ours = sort_last(values)
    (grad,) = torch.autograd.grad((ours * weights).sum(), values)
    expected = torch.sort(values, dim=-1).values
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), values)
    assert ours.dtype == dtype and ours.shape == values.shape
    assert torch.equal(ours, expected)
    assert torch.equal(grad, expected_grad)  # no ties: the same scatter, bit for bit
    assert torch.equal(argsort_last(values), torch.argsort(values, dim=-1))


def test_ties_keep_the_sorted_values_and_one_order_for_one_input():
    values = torch.relu(_distinct((4, NUMPY_SORT_MIN_ELEMENTS // 2), seed=3))  # half of them equal zeros
    order = argsort_last(values)
    assert torch.equal(torch.gather(values, -1, order), torch.sort(values, dim=-1).values)
    assert torch.equal(torch.sort(order, dim=-1).values, torch.arange(values.shape[-1]).expand_as(order))
    assert torch.equal(argsort_last(values.clone()), order)  # reproducible
    target = torch.sort(_values((1, 4, 100), seed=4), dim=-1).values
    matched = histogram_match(values[None], target).flatten(2)
    nonzero = values[None] > 0
    # where values differ, the remap is torch's; tied zeros share the lowest quantiles among them
    expected = torch.empty_like(matched).scatter_(
        -1, torch.argsort(values[None], dim=-1),
        torch.nn.functional.interpolate(target.reshape(4, 1, -1), size=values.shape[-1], mode="linear",
                                        align_corners=True).reshape(1, 4, -1))
    torch.testing.assert_close(matched[nonzero], expected[nonzero], rtol=0, atol=0)


def test_small_integer_and_one_column_tensors_use_torch_sort():
    small, integers = torch.rand(3, 10), torch.randint(0, 5, (2, NUMPY_SORT_MIN_ELEMENTS))
    for tensor in (small, integers, torch.rand(NUMPY_SORT_MIN_ELEMENTS, 1)):
        assert not sorting._numpy_sorts(tensor)
        assert torch.equal(sort_last(tensor), torch.sort(tensor, dim=-1).values)


def test_rows_with_many_zeros_sort_their_other_values_and_place_the_zeros_between_signs():
    values = _distinct((3, NUMPY_SORT_MIN_ELEMENTS // 2), seed=5)  # negatives and positives
    zeros = torch.rand(values.shape, generator=torch.Generator().manual_seed(6)) < 0.3
    values = values.masked_fill(zeros, 0.0)
    order = argsort_last(values)
    assert torch.equal(torch.gather(values, -1, order), torch.sort(values, dim=-1).values)
    assert torch.equal(torch.sort(order, dim=-1).values, torch.arange(values.shape[-1]).expand_as(order))
    values[0, :5] = float("nan")  # NaNs last, as torch.sort puts them
    assert torch.equal(torch.gather(values, -1, argsort_last(values))[0, -5:].isnan(), torch.ones(5, dtype=torch.bool))
