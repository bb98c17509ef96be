"""Shared fixtures: tiny images and tiny backbones keep the suite fast on a 2-core CPU."""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch

from texsynth.examples import load_example

torch.set_num_threads(min(2, os.cpu_count() or 1))

#: for tests of what happens on a machine without a GPU (CI's)
NEEDS_NO_GPU = pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                                  reason="this machine has a GPU")

#: a small weight-free backbone: cheap enough for many optimization steps in tests.
TINY_BACKBONE = {"backbone": "random_multiscale", "backbone_options": {"kernel_sizes": (3, 5), "filters": 8}}


@pytest.fixture
def exemplar() -> torch.Tensor:
    """A 32x32 structured exemplar (bricks), ``(1, 3, 32, 32)`` in [0, 1]."""
    return load_example("bricks", size=32)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any download attempt fail as it does offline (and never fetch 548 MB in a test)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr("torch.hub.urlopen", refuse)


@pytest.fixture
def torch_home(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """An empty, private torchvision cache (``TORCH_HOME``)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home
