from __future__ import annotations

import pytest
import torch

from conftest import TINY_BACKBONE
from texsynth import TextureSynthesis
from texsynth.api import fit
from texsynth.errors import InvalidArgumentError
from texsynth.memory import activation_floats_per_pixel, available_bytes, estimate_bytes


def test_estimate_scales_with_pixels_variations_and_history(exemplar):
    small = TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, seed=0)
    large = TextureSynthesis(exemplar, **TINY_BACKBONE, size=128, seed=0)
    many = TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, variations=3, seed=0)
    short = TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, seed=0, lbfgs={"history_size": 5})
    assert estimate_bytes(large) / estimate_bytes(small) == pytest.approx(4.0, rel=0.01)
    assert estimate_bytes(many) / estimate_bytes(small) == pytest.approx(3.0, rel=0.01)
    assert estimate_bytes(short) < estimate_bytes(small)
    # the tiny backbone saves its two 8-channel ReLU outputs (kernel sizes 3 and 5; the
    # convolutions' backward needs only their weights), plus two copies of the largest one
    floats = estimate_bytes(small) / 4 - (2 * 100 + 6 + 4) * 64 * 64 * 3
    assert floats / (64 * 64) == pytest.approx(2 * 8 + 2 * 8, rel=0.01)


def test_fused_random_banks_keep_one_copy_of_their_output(exemplar):
    fused = TextureSynthesis(exemplar, backbone="random_pyramid", backbone_options={"levels": 1, "filters": 4},
                             losses=["gram"], size=64, seed=0)
    per_bank = TextureSynthesis(exemplar, backbone="random_pyramid", backbone_options={"levels": 1, "filters": 4},
                                losses={"gram": {"layers": ["level0", "level0.k3"]}}, size=64, seed=0)
    # fused: the 12-channel result only, then its gradient and a working copy
    assert activation_floats_per_pixel(fused.extractor) == pytest.approx(12 + 2 * 12)
    # a tapped bank runs unfused: three ReLU outputs (4 each) and their concatenation
    assert activation_floats_per_pixel(per_bank.extractor) == pytest.approx(12 + 12 + 2 * 12)


def test_refuses_before_running_when_memory_is_short(exemplar, monkeypatch):
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, seed=0)
    monkeypatch.setattr("texsynth.memory.available_bytes", lambda device: 1024**2)
    with pytest.raises(InvalidArgumentError, match=r"64x64 \(x1\) needs about .* GiB on cpu, but only 0.0 GiB"):
        fit(module, 2, logdir=False, progress_bar=False, quiet=True, accelerator="cpu")
    assert module.num_evals == 0


def test_an_image_too_large_for_memory_is_refused_before_it_is_allocated(exemplar, monkeypatch):
    budget = 2 * 3 * 64 * 64 * 4  # exactly the image and its last good copy at 64x64
    monkeypatch.setattr("texsynth.memory.available_bytes", lambda device: budget)
    TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, seed=0)
    allocations = []
    monkeypatch.setattr("texsynth.module.initial_image", lambda *args: allocations.append(args))
    with pytest.raises(InvalidArgumentError, match=r"output size 64x64 \(x2\): its image alone needs"):
        TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, variations=2, seed=0)
    with pytest.raises(InvalidArgumentError, match=r"output size 96x64 \(x1\): its image"):
        TextureSynthesis(exemplar, **TINY_BACKBONE, size=(64, 96), seed=0)
    # the periodic exemplar's 78x64 output is cut from an 80x64 tile (its period is 8), which is what must fit
    with pytest.raises(InvalidArgumentError, match=r"output size 78x64 \(x1\) \(cut from a 80x64 tile\): its image"):
        TextureSynthesis(exemplar, **TINY_BACKBONE, size=(64, 78), seed=0)
    assert allocations == []


def test_a_full_size_too_large_is_refused_before_its_coarse_stages_run(exemplar, monkeypatch):
    import texsynth.api

    fits = []
    monkeypatch.setattr(texsynth.api, "fit", lambda *args, **kwargs: fits.append(args) or (0.0, None))
    full = TextureSynthesis(exemplar, **TINY_BACKBONE, size=96, seed=0)
    monkeypatch.setattr("texsynth.memory.available_bytes", lambda device: estimate_bytes(full) - 1)
    with pytest.raises(InvalidArgumentError, match=r"output size 96x96 \(x1\) needs about"):
        texsynth.api.synthesize(exemplar, **TINY_BACKBONE, size=96, seed=0, steps=1, coarse_levels=1,
                                accelerator="cpu")
    assert fits == []  # the 48x48 stage, which fits, did not run first


def test_available_memory_is_known_on_cpu():
    free = available_bytes(torch.device("cpu"))
    assert free is None or free > 0


def _tiny_vgg(exemplar, **options):
    """VGG19 taps up to pool3 on random weights: a sequential backbone, cheap at 32x32."""
    return TextureSynthesis(exemplar, backbone="vgg19", weights="random", seed=0,
                            losses={"gram": {"layers": ["conv1_1", "pool1", "pool2", "pool3"]}}, **options)


def test_checkpointing_gives_the_same_loss_and_gradient_with_less_kept_memory(exemplar):
    plain, checkpointed = _tiny_vgg(exemplar), _tiny_vgg(exemplar, checkpointing=True)
    image = plain.image.detach().clone().requires_grad_(True)
    grads = []
    for module in (plain, checkpointed):
        total = module.compute_losses(image)["total"]
        grads.append((float(total.detach()), torch.autograd.grad(total, image)[0]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-8)
    kept_plain = activation_floats_per_pixel(plain.extractor)
    kept_checkpointed = activation_floats_per_pixel(checkpointed.extractor)
    # plain: every saved output up to pool3; checkpointed: the four taps + the largest segment
    assert kept_checkpointed < 0.8 * kept_plain


def test_checkpointing_switches_on_by_itself_when_memory_is_short(exemplar, monkeypatch):
    module = _tiny_vgg(exemplar, size=48)
    needed_plain = estimate_bytes(module)
    module.extractor.enable_checkpointing()
    needed_checkpointed = estimate_bytes(module)
    module.extractor.enable_checkpointing(False)
    budget = (needed_plain + needed_checkpointed) // 2  # fits only with checkpointing
    monkeypatch.setattr("texsynth.memory.available_bytes", lambda device: budget)
    fit(module, 1, logdir=False, progress_bar=False, quiet=True, accelerator="cpu")
    assert module.extractor.checkpointing and module.num_evals > 0

    refused = _tiny_vgg(exemplar, size=48, checkpointing=False)
    with pytest.raises(InvalidArgumentError, match="needs about"):
        fit(refused, 1, logdir=False, progress_bar=False, quiet=True, accelerator="cpu")


def test_checkpointing_is_refused_for_a_backbone_that_cannot_be_segmented(exemplar):
    with pytest.raises(InvalidArgumentError, match="gradient checkpointing needs a backbone"):
        TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, checkpointing=True)


def test_lbfgs_history_is_bounded_for_large_outputs_unless_chosen(exemplar, monkeypatch):
    monkeypatch.setattr("texsynth.module.LBFGS_HISTORY_BUDGET", 64 * 64 * 3 * 4 * 2 * 20)  # 20 steps at 64x64
    assert TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, seed=0).lbfgs_options["history_size"] == 20
    assert TextureSynthesis(exemplar, **TINY_BACKBONE, size=32, seed=0).lbfgs_options["history_size"] == 80
    assert TextureSynthesis(exemplar, **TINY_BACKBONE, size=256, seed=0).lbfgs_options["history_size"] == 5
    chosen = TextureSynthesis(exemplar, **TINY_BACKBONE, size=64, seed=0, lbfgs={"history_size": 100})
    assert chosen.lbfgs_options["history_size"] == 100


def test_the_planned_device_is_the_one_lightning_will_pick():
    from texsynth.trainer import make_trainer, planned_device

    assert planned_device("cpu", 1) == torch.device("cpu")
    assert planned_device("auto", 1) == make_trainer(1, logdir=False, accelerator="auto").strategy.root_device
    if not torch.cuda.is_available():
        assert planned_device("gpu", 1) is None  # Lightning refuses it; its own error says why
    assert planned_device("cpu", 2) is None and planned_device("auto", "auto") is None
