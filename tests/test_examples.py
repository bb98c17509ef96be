from __future__ import annotations

import pytest
import torch

from texsynth import list_examples, load_example
from texsynth.errors import ImageLoadError, InvalidArgumentError
from texsynth.examples import load_exemplar


@pytest.mark.parametrize("name", list_examples())
def test_examples_are_deterministic_structured_images(name):
    image = load_example(name, size=64)
    assert image.shape == (1, 3, 64, 64)
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    torch.testing.assert_close(image, load_example(name, size=64))
    assert not torch.equal(image, load_example(name, size=64, seed=1))
    # Real structure: strong local contrast (edges), not a flat or blurred field.
    gradient = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    assert float(gradient) > 0.02 and float(image.std()) > 0.05


def test_at_least_four_examples():
    assert {"cells", "cracks", "bricks", "weave"} <= set(list_examples())


def test_names_resolve_as_exemplars_unless_a_file_exists(tmp_path, monkeypatch):
    image, name = load_exemplar("cracks")
    assert name == "cracks" and image.shape == (1, 3, 256, 256)
    assert load_exemplar("example:cells")[1] == "cells"
    with pytest.raises(ImageLoadError, match="bundled examples: bricks"):
        load_exemplar("crackz")
    with pytest.raises(InvalidArgumentError, match="unknown example"):
        load_example("crackz")
