"""Sorting along the last dimension, for the losses that compare distributions.

``sliced_wasserstein`` sorts every projection of a layer's features at every evaluation,
``histogram`` ranks every channel: at 256x256 the weight-free fine level alone is 384 rows of
65,536 values. ``torch.sort`` on a CPU took 0.80 s for those rows here (2 threads), more than
the whole Gram evaluation. NumPy's argsort (vectorized quicksort on x86's AVX-512 / AVX2)
releases the GIL, so rows split over torch's threads sort in a fraction of that; the values
are then gathered by index, which autograd differentiates as ``torch.sort`` (a scatter of the
gradient back to where each value came from). Elsewhere (GPUs, small or integer tensors)
``torch.sort`` runs. Ties may come out in another order than ``torch.sort``'s: the sorted
values are the same, and the order is fixed for a given input, so runs stay reproducible.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

#: below this many elements torch's own sort is as fast (no threads to start)
NUMPY_SORT_MIN_ELEMENTS = 1 << 16


def _numpy_sorts(tensor: torch.Tensor) -> bool:
    return (tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64)
            and tensor.numel() >= NUMPY_SORT_MIN_ELEMENTS and tensor.dim() > 0 and tensor.shape[-1] > 1)


def argsort_last(tensor: torch.Tensor) -> torch.Tensor:
    """Indices that sort ``tensor`` along its last dimension (int64, as ``torch.argsort``)."""
    return _numpy_argsort(tensor) if _numpy_sorts(tensor) else torch.argsort(tensor, dim=-1)


def _numpy_argsort(tensor: torch.Tensor) -> torch.Tensor:
    rows = tensor.detach().reshape(-1, tensor.shape[-1]).contiguous().numpy()
    order = np.empty(rows.shape, dtype=np.int64)
    workers = max(1, min(torch.get_num_threads(), rows.shape[0]))

    def sort_rows(share: np.ndarray) -> None:
        if share.size:
            block = slice(share[0], share[-1] + 1)
            order[block] = _argsort_block(rows[block])

    shares = np.array_split(np.arange(rows.shape[0]), workers)
    if workers == 1:
        sort_rows(shares[0])
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(sort_rows, shares))
    return torch.from_numpy(order).view(tensor.shape)


def _argsort_block(rows: np.ndarray) -> np.ndarray:
    """``np.argsort`` of each row. Rows with many exact zeros (features after a ReLU: about half
    of them) sort their other values only and put the zeros in as one block where they belong:
    ties slow the vectorized sort down (384 rows of 65,536 values, half zeros: 0.54 s in two
    threads, 0.20 s this way), and the order among equal values is free anyway."""
    if np.count_nonzero(rows == 0) < rows.size // 8:
        return np.argsort(rows, axis=-1)
    order = np.empty(rows.shape, dtype=np.int64)
    for index, row in enumerate(rows):
        is_zero = row == 0
        others = np.flatnonzero(~is_zero)
        others = others[np.argsort(row[others])]
        zeros = np.flatnonzero(is_zero)
        negatives = int(np.searchsorted(row[others], 0.0))
        order[index] = np.concatenate([others[:negatives], zeros, others[negatives:]])
    return order


def sort_last(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` sorted along its last dimension, ascending; differentiable like ``torch.sort``."""
    if not _numpy_sorts(tensor):
        return torch.sort(tensor, dim=-1).values
    return torch.gather(tensor, -1, _numpy_argsort(tensor))
