"""Batches of variations: K textures at once, each independent of the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_BACKBONE
from texsynth import TextureSynthesis
from texsynth.api import fit
from texsynth.cli import main
from texsynth.losses import list_losses


def _spec(name: str):
    # fixed directions, so two evaluations of the sliced Wasserstein loss are comparable
    return (name, {"resample": False}) if name == "sliced_wasserstein" else name


@pytest.mark.parametrize("loss", [_spec(name) for name in list_losses()], ids=str)
def test_each_sample_gradient_ignores_the_other_samples(exemplar, loss):
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, losses=[loss], variations=2, seed=0)
    batch = torch.rand(2, 3, 32, 32)

    def gradient_of_first(images: torch.Tensor) -> torch.Tensor:
        images = images.clone().requires_grad_(True)
        module.compute_losses(images)["total"].backward()
        return images.grad[0]

    changed = batch.clone()
    changed[1] = torch.rand(3, 32, 32)
    torch.testing.assert_close(gradient_of_first(batch), gradient_of_first(changed))
    # and the batch total is the sum of the per-sample totals
    separate = sum(float(module.compute_losses(batch[i : i + 1])["total"]) for i in range(2))
    assert float(module.compute_losses(batch)["total"].detach()) == pytest.approx(separate, rel=1e-5)


def test_variations_differ_and_all_improve(exemplar):
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, variations=3, seed=0)
    with torch.no_grad():
        before = [float(module.compute_losses(module.image[i : i + 1])["total"]) for i in range(3)]
    fit(module, 3, logdir=False, progress_bar=False, quiet=True)
    outputs = module.outputs()
    assert outputs.shape == (3, 3, 32, 32)
    assert (outputs[0] - outputs[1]).abs().mean() > 0.02 and (outputs[1] - outputs[2]).abs().mean() > 0.02
    with torch.no_grad():
        after = [float(module.compute_losses(module.image[i : i + 1])["total"]) for i in range(3)]
    assert all(a < 0.2 * b for a, b in zip(after, before))


def test_cli_writes_one_png_per_variation(tmp_path, capsys):
    out = tmp_path / "texture.png"
    code = main(["synthesize", "weave", "--exemplar-size", "32", "-o", str(out), "--variations", "3",
                 "--steps", "1", "--max-iter", "3", "--backbone", "random_pyramid", "--no-log", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["texture_0.png", "texture_1.png", "texture_2.png"]
    assert (tmp_path / "texture.texsynth.yaml").exists()
    pixels = []
    for name in names:
        with Image.open(tmp_path / name) as image:
            assert image.size == (32, 32)
            pixels.append(torch.from_numpy(np.asarray(image, dtype=np.float32)))
    assert not torch.equal(pixels[0], pixels[1])
