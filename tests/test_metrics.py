"""Sanity of the texture metrics on procedural textures (no external data)."""

from __future__ import annotations

import pytest
import torch

from texsynth.examples import load_example
from texsynth.init import random_phase_noise
from texsynth.metrics import (
    ChromaNoise,
    ColorDistance,
    CopyScore,
    LBPDistance,
    PatchSlicedWasserstein,
    SpectrumDistance,
    chroma_noise,
    color_distance,
    copy_score,
    lbp_distance,
    patch_swd,
    spectrum_distance,
    texture_metrics,
)

DISTANCES = [patch_swd, spectrum_distance, lbp_distance, color_distance]


@pytest.fixture(scope="module")
def images():
    exemplar = load_example("cracks", size=96)
    new_sample = load_example("cracks", size=96, seed=1)  # the same texture process, new layout
    generator = torch.Generator().manual_seed(0)
    phase_noise = random_phase_noise(exemplar, (1, 3, 96, 96), generator).clamp(0, 1)
    white = torch.rand((1, 3, 96, 96), generator=generator)
    return {"exemplar": exemplar, "sample": new_sample, "phase_noise": phase_noise, "white": white}


@pytest.mark.parametrize("distance", DISTANCES, ids=lambda f: f.__name__)
def test_exemplar_against_itself_is_near_zero_and_white_noise_is_far(distance, images):
    own = float(distance(images["exemplar"], images["exemplar"]))
    white = float(distance(images["white"], images["exemplar"]))
    sample = float(distance(images["sample"], images["exemplar"]))
    assert own < 0.25 * sample < 0.25 * white


def test_local_structure_separates_a_real_sample_from_random_phase_noise(images):
    """Random-phase noise has the right spectrum and colours but no cracks: LBP sees it."""
    sample = float(lbp_distance(images["sample"], images["exemplar"]))
    phase = float(lbp_distance(images["phase_noise"], images["exemplar"]))
    assert sample < 0.7 * phase


def test_copy_score_flags_shifted_copies_not_new_samples(images):
    exemplar = images["exemplar"]
    shifted = torch.roll(exemplar, (17, 40), dims=(2, 3))[..., 10:90, 5:85]
    assert float(copy_score(exemplar, exemplar)) == pytest.approx(1.0, abs=1e-4)
    assert float(copy_score(shifted, exemplar)) > 0.95
    assert float(copy_score(images["sample"], exemplar)) < 0.6
    assert float(copy_score(images["white"], exemplar)) < 0.35


def test_chroma_noise_sees_colour_speckle_not_brightness_detail(images):
    gray = images["exemplar"].mean(dim=1, keepdim=True).expand(1, 3, 96, 96)
    noise = torch.randn((1, 1, 96, 96), generator=torch.Generator().manual_seed(0))
    speckle = {a: gray + a * torch.cat([noise, -noise, torch.zeros_like(noise)], dim=1) for a in (0.01, 0.03)}
    assert float(chroma_noise(gray, gray)) == 0.0
    assert 0 < float(chroma_noise(speckle[0.01], gray)) < float(chroma_noise(speckle[0.03], gray))
    assert float(chroma_noise(gray + 0.03 * noise, gray)) < 1e-6  # the same noise in every channel
    # the exemplar's own colour detail does not count against an output that has as much
    assert float(chroma_noise(images["exemplar"], images["exemplar"])) == 0.0
    assert float(chroma_noise(gray, images["exemplar"])) == 0.0


def test_metrics_accept_outputs_of_another_size(images):
    large = load_example("cracks", size=128, seed=2)
    values = texture_metrics(large, images["exemplar"])
    assert set(values) == {"swd", "spectrum", "lbp", "color", "chroma", "copy"}
    assert all(v == v and v >= -1 for v in values.values())


@pytest.mark.parametrize(
    "metric, function",
    [(PatchSlicedWasserstein, patch_swd), (SpectrumDistance, spectrum_distance), (LBPDistance, lbp_distance),
     (ColorDistance, color_distance), (ChromaNoise, chroma_noise), (CopyScore, copy_score)],
)
def test_metric_classes_average_the_functional_form(metric, function, images):
    batch = torch.cat([images["sample"], images["phase_noise"]])
    instance = metric()
    instance.update(batch, images["exemplar"])  # one exemplar for the whole batch
    expected = (function(batch[0], images["exemplar"]) + function(batch[1], images["exemplar"])) / 2
    torch.testing.assert_close(instance.compute(), expected.float(), rtol=1e-5, atol=1e-6)
    instance.reset()
    instance.update(images["sample"], images["exemplar"])
    torch.testing.assert_close(instance.compute(), function(images["sample"], images["exemplar"]).float())


def test_bad_metric_input_is_named():
    from texsynth.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="`preds`"):
        lbp_distance(torch.rand(2, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_metrics_name_what_they_cannot_measure():
    """An array (not a tensor) used to fail with AttributeError 'dim'; LBP of an image no
    larger than twice its radius returned NaN."""
    import numpy as np

    from texsynth.errors import InvalidArgumentError
    from texsynth.metrics import lbp_distance, texture_metrics

    with pytest.raises(InvalidArgumentError, match="expected `preds` to be a tensor, got ndarray"):
        texture_metrics(np.random.rand(32, 32, 3), torch.rand(3, 32, 32))
    with pytest.raises(InvalidArgumentError, match="`target` is 8x8; LBP at radius 4 needs more than 8 pixels"):
        lbp_distance(torch.rand(3, 16, 16), torch.rand(3, 8, 8))
    assert torch.isfinite(lbp_distance(torch.rand(3, 9, 9), torch.rand(3, 9, 9)))
    assert torch.isfinite(lbp_distance(torch.rand(3, 8, 8), torch.rand(3, 8, 8), radii=(1, 2)))


def test_metric_inputs_are_read_as_images_do_not_give_silent_garbage(images):
    """uint8 images were measured as 0-255 floats (patch SWD in the hundreds) and NaN came back
    as NaN; now uint8 is scaled as texsynth.load_image scales it, and the rest is refused."""
    from texsynth.errors import InvalidArgumentError

    sample, exemplar = images["sample"], images["exemplar"]
    as_bytes = (sample * 255).round().to(torch.uint8)
    for metric in (patch_swd, color_distance, copy_score):
        torch.testing.assert_close(metric(as_bytes, exemplar), metric(as_bytes.float() / 255, exemplar))
    assert patch_swd(as_bytes, exemplar) < 2 * patch_swd(sample, exemplar)
    with pytest.raises(InvalidArgumentError, match="`preds` contains NaN or Inf"):
        texture_metrics(sample * float("nan"), exemplar)
    with pytest.raises(InvalidArgumentError, match=r"`target` values must lie in \[0, 1\] \(or be uint8, 0-255\)"):
        color_distance(sample, exemplar * 255)
