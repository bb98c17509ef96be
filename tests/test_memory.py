from __future__ import annotations

import pytest
import torch

from conftest import TINY_BACKBONE
from texsynth import TextureSynthesis
from texsynth.api import fit
from texsynth.errors import InvalidArgumentError
from texsynth.memory import available_bytes, estimate_bytes


def test_estimate_scales_with_pixels_variations_and_history(exemplar):
    small = TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, seed=0)
    large = TextureSynthesis(exemplar, **TINY_BACKBONE, size=128, seed=0)
    many = TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, variations=3, seed=0)
    short = TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, seed=0, lbfgs={"history_size": 5})
    assert estimate_bytes(large) / estimate_bytes(small) == pytest.approx(4.0, rel=0.01)
    assert estimate_bytes(many) / estimate_bytes(small) == pytest.approx(3.0, rel=0.01)
    assert estimate_bytes(short) < estimate_bytes(small)
    # the tiny backbone keeps 2x(conv+relu) outputs of 8 channels per kernel size, (3, 5), per pixel
    floats = estimate_bytes(small) / 4 - (2 * 100 + 6 + 4) * 64 * 64 * 3
    assert floats / (64 * 64) == pytest.approx(2.0 * 4 * 8, rel=0.01)


def test_refuses_before_running_when_memory_is_short(exemplar, monkeypatch):
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, seed=0)
    monkeypatch.setattr("texsynth.memory.available_bytes", lambda device: 1024**2)
    with pytest.raises(InvalidArgumentError, match=r"64x64 \(x1\) needs about .* GiB on cpu, but only 0.0 GiB"):
        fit(module, 2, logdir=False, progress_bar=False, quiet=True)
    assert module.num_evals == 0


def test_available_memory_is_known_on_cpu():
    free = available_bytes(torch.device("cpu"))
    assert free is None or free > 0
