from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch import nn

from conftest import TINY_BACKBONE
from texsynth import TextureSynthesis
from texsynth.api import fit
from texsynth.errors import InvalidArgumentError
from texsynth.losses import GramLoss, SpectrumLoss, TextureLoss


def _module(exemplar: torch.Tensor, **kwargs) -> TextureSynthesis:
    options = {**TINY_BACKBONE, "seed": 0, **kwargs}
    return TextureSynthesis(exemplar, **options)


def test_the_image_is_the_only_parameter(exemplar):
    module = _module(exemplar)
    params = list(module.parameters())
    assert len(params) == 1 and params[0] is module.image
    assert module.image.shape == (1, 3, 32, 32)
    assert module.state_dict().keys() == {"image"}  # backbone weights are not checkpointed


def test_a_plain_user_module_backbone_is_frozen_too(exemplar):
    user_net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
    module = TextureSynthesis(exemplar, backbone=user_net, losses=[GramLoss(layers=["1"])], seed=0)
    assert [p is module.image for p in module.parameters()] == [True]
    fit(module, 1, logdir=False, progress_bar=False, quiet=True)
    assert all(b.grad is None for b in user_net.buffers())


def _warnings_of_a_plain_trainer_fit(module: TextureSynthesis) -> list[str]:
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        trainer.fit(module)
        assert warnings.filters == filters  # the fit's own filter is gone again
    return [str(warning.message) for warning in caught]


def test_a_plain_trainer_does_not_warn_about_the_frozen_backbone_being_in_eval_mode(exemplar):
    module = _module(exemplar)
    assert not module.backbone.training
    messages = _warnings_of_a_plain_trainer_fit(module)
    assert module.num_steps == 1
    assert not [message for message in messages if "eval mode" in message]


def test_any_other_module_in_eval_mode_is_still_reported_by_lightning(exemplar):
    module = _module(exemplar)
    module.user_head = nn.Dropout().eval()
    messages = _warnings_of_a_plain_trainer_fit(module)
    in_eval = sum(not submodule.training for submodule in module.modules())
    assert f"Found {in_eval} module(s) in eval mode at the start of training." in " ".join(messages)


def test_steps_run_lbfgs_inner_iterations_with_zero_grad_inside_the_closure(exemplar, monkeypatch):
    module = _module(exemplar, lbfgs={"max_iter": 4})
    calls: list[int] = []
    original = torch.optim.LBFGS.zero_grad

    def recording_zero_grad(self, *args, **kwargs):
        calls.append(module.num_evals)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.LBFGS, "zero_grad", recording_zero_grad)
    fit(module, 3, logdir=False, progress_bar=False, quiet=True)
    assert module.num_steps == 3
    assert module.num_evals > 3  # inner iterations: several evaluations per step
    # zero_grad runs once per evaluation, right before it: inside the closure.
    assert calls == list(range(module.num_evals))


def test_the_loss_goes_down_and_backbone_gets_no_gradient(exemplar):
    module = _module(exemplar)
    with torch.no_grad():
        before = float(module.compute_losses()["total"])
    fit(module, 4, logdir=False, progress_bar=False, quiet=True)
    after = float(module.compute_losses()["total"].detach())
    assert after < 0.1 * before
    assert module.loss_history == sorted(module.loss_history, reverse=True)
    assert all(buffer.grad is None for buffer in module.backbone.buffers())


def test_targets_are_computed_once(exemplar, monkeypatch):
    module = _module(exemplar)
    counts = {"n": 0}
    original = GramLoss.set_target

    def counting(self, *args, **kwargs):
        counts["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GramLoss, "set_target", counting)
    fit(module, 2, logdir=False, progress_bar=False, quiet=True)
    fit(module, 2, logdir=False, progress_bar=False, quiet=True)
    assert counts["n"] == 1


def test_compute_losses_gives_weighted_terms_and_total(exemplar):
    module = _module(exemplar, losses={"gram": 2.0, "spectrum": 0.5})
    image = torch.rand(1, 3, 32, 32)
    terms = module.compute_losses(image)
    assert set(terms) == {"gram", "spectrum", "chroma_spectrum", "total"}  # the preset's chroma term stays
    torch.testing.assert_close(terms["total"], terms["gram"] + terms["spectrum"] + terms["chroma_spectrum"])
    loss = module.loss_terms["spectrum"]
    torch.testing.assert_close(terms["spectrum"], 0.5 * loss(image, {}))
    at_exemplar = module.compute_losses(exemplar[0])
    assert float(at_exemplar["total"]) < 1e-6 * float(terms["total"])


def test_loss_mapping_merges_over_preset_and_sequence_replaces(exemplar):
    merged = _module(exemplar, losses={"spectrum": 0})
    assert list(merged.loss_terms) == ["gram", "chroma_spectrum"]
    replaced = _module(exemplar, losses=[SpectrumLoss(mode="luminance")])
    assert list(replaced.loss_terms) == ["spectrum"]
    with pytest.raises(InvalidArgumentError, match="no loss left"):
        _module(exemplar, losses={"gram": 0, "spectrum": 0, "chroma_spectrum": 0})


def test_lbfgs_state_survives_between_fits_and_reset_starts_over(exemplar):
    module = _module(exemplar, lbfgs={"max_iter": 3})
    fit(module, 2, logdir=False, progress_bar=False, quiet=True)
    optimizer = module._optimizer
    iterations = optimizer.state[module.image]["n_iter"]
    fit(module, 2, logdir=False, progress_bar=False, quiet=True)
    assert module._optimizer is optimizer
    assert optimizer.state[module.image]["n_iter"] > iterations
    before = module.image.detach().clone()
    module.reset_image()
    assert module._optimizer is None
    assert not torch.equal(before, module.image.detach())


def _curvature_pairs(module: TextureSynthesis) -> int:
    return len(module._optimizer.state[module.image].get("old_dirs", []))


def test_the_loss_scale_keeps_lbfgs_curvature_pairs_of_small_losses(exemplar):
    # torch keeps a pair only when y·s > 1e-10: small enough losses lose every one, and L-BFGS
    # crawls on stale curvature. L-BFGS minimizes the scaled loss; what is logged is not scaled.
    small = {"gram": 1e-6, "spectrum": 1e-6, "chroma_spectrum": 1e-6}
    pairs, totals = {}, {}
    for scale in (1.0, 2.0**14):
        module = _module(exemplar, losses=small, lbfgs={"max_iter": 5, "loss_scale": scale})
        fit(module, 2, logdir=False, progress_bar=False, quiet=True)
        pairs[scale], totals[scale] = _curvature_pairs(module), module.loss_history[-1]
        with torch.no_grad():
            assert module.loss_history[-1] == pytest.approx(float(module.compute_losses()["total"]), rel=1e-5)
    assert pairs[1.0] == 0 and pairs[2.0**14] > 0
    assert totals[2.0**14] < totals[1.0]


def test_the_loss_scale_is_the_same_as_multiplying_every_weight(exemplar):
    scaled = _module(exemplar, lbfgs={"max_iter": 4, "loss_scale": 2.0**10})
    weights = {name: loss.weight * 2.0**10 for name, loss in scaled.loss_terms.items()}
    weighted = _module(exemplar, losses=weights, lbfgs={"max_iter": 4, "loss_scale": 1.0})
    for module in (scaled, weighted):
        fit(module, 2, logdir=False, progress_bar=False, quiet=True)
    assert torch.equal(scaled.image, weighted.image)  # a power of two scales exactly


def test_same_seed_same_image_and_different_seed_differs(exemplar):
    images = []
    for seed in (3, 3, 4):
        module = _module(exemplar, seed=seed)
        fit(module, 2, logdir=False, progress_bar=False, quiet=True)
        images.append(module.output())
    assert torch.equal(images[0], images[1])
    assert not torch.equal(images[0], images[2])


def test_output_size_may_differ_from_the_exemplar(exemplar):
    module = _module(exemplar, size=(24, 16), losses={"spectrum": 0})
    fit(module, 1, logdir=False, progress_bar=False, quiet=True)
    assert module.output().shape == (3, 24, 16)


def test_too_small_image_reports_the_minimum_size():
    with pytest.raises(InvalidArgumentError, match="at least 32 pixels"):
        TextureSynthesis(torch.rand(3, 16, 16), backbone="vgg19", weights="random",
                         losses=[GramLoss(layers=["pool5"])])


def test_metrics_are_logged_per_term_and_event_file_holds_scalars_and_images(exemplar, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = _module(exemplar)
    _, log_dir = fit(module, 3, logdir=tmp_path, progress_bar=False, quiet=True, log_images_every=2)
    events = EventAccumulator(log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/gram", "loss/spectrum", "loss/total", "evals"} <= scalars
    assert len(events.Scalars("loss/total")) == 3
    assert {"exemplar", "output"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Images("output")] == [0, 2, 3]
    hparams = (tmp_path / "image" / "version_0" / "hparams.yaml").read_text()
    assert "backbone: random_multiscale" in hparams and "seed: 0" in hparams


def test_user_loss_registered_in_user_code_is_used_by_name(exemplar):
    from texsynth.losses import LOSSES, register_loss

    @register_loss("test_mean_colour")
    class MeanColour(TextureLoss):
        def set_target(self, exemplar, features, output_size):
            self.register_buffer("target", exemplar.mean(dim=(2, 3)), persistent=False)

        def forward(self, image, features):
            return (image.mean(dim=(2, 3)) - self.target).pow(2).sum()

    try:
        module = _module(exemplar, losses={"test_mean_colour": 10.0})
        assert "test_mean_colour" in module.loss_terms
        fit(module, 2, logdir=False, progress_bar=False, quiet=True)
        error = (module.output().mean(dim=(1, 2)) - exemplar[0].mean(dim=(1, 2))).abs().max()
        assert error < 0.02
    finally:
        LOSSES.remove("test_mean_colour")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": -1}, "seed"),
        ({"init": "zeros"}, "unknown init 'zeros'"),
        ({"lbfgs": {"max_iter": 0}}, "max_iter"),
        ({"lbfgs": {"momentum": 0.9}}, "momentum"),
        ({"lbfgs": {"loss_scale": 0}}, "loss_scale must be a positive number"),
        ({"size": 0}, "size must be positive"),
        ({"losses": {"gram": float("nan")}}, "finite"),
        ({"losses": {"nope": 1.0}}, "unknown loss 'nope'"),
        ({"backbone": "nope"}, "unknown backbone 'nope'"),
        ({"lbfgs": 3}, "lbfgs must be a mapping of L-BFGS options, got int"),
        ({"backbone_options": [3]}, "backbone_options must be a mapping, got list"),
    ],
)
def test_bad_options_fail_before_any_work(exemplar, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        _module(exemplar, **kwargs)


def test_divergence_restores_the_last_good_image_and_stops(exemplar):
    class Poison(TextureLoss):
        """Finite for the first evaluations, then NaN (a misbehaving custom loss)."""

        calls = 0

        def set_target(self, exemplar, features, output_size):
            pass

        def forward(self, image, features):
            type(self).calls += 1
            value = image.mean() * 0.0
            return value + float("nan") if type(self).calls > 7 else value

    module = _module(exemplar, losses=[GramLoss(), Poison()], lbfgs={"max_iter": 3})
    fit(module, 6, logdir=False, progress_bar=False, quiet=True)
    assert module.diverged
    assert module.num_steps == 2  # steps 1-2 were good; step 3 hit the NaN
    assert torch.isfinite(module.image).all()
    torch.testing.assert_close(module.image.detach(), module._last_good_image)
    assert len(module.loss_history) == 2


def test_sliced_wasserstein_under_the_line_search_converges_with_directions_drawn_per_step(exemplar):
    # drawn anew at every evaluation, the strong-Wolfe line search saw another function at each
    # probe: this run ended at 0.12 of its first loss instead of 0.015, and at 128x128 the
    # README's `--loss gram=0 --loss sliced_wasserstein=1` came out as coloured speckle
    module = TextureSynthesis(exemplar, size=32, seed=0, preset="weight_free", lbfgs={"max_iter": 5},
                              losses={"gram": 0, "sliced_wasserstein": 1})
    loss, starts = module.loss_terms["sliced_wasserstein"], []
    original_start_step = loss.start_step

    def recording_start_step() -> None:
        starts.append(module.num_evals)
        original_start_step()

    loss.start_step = recording_start_step
    with torch.no_grad():
        before = float(module.compute_losses()["total"])
    fit(module, 5, logdir=False, progress_bar=False, quiet=True)
    assert not module.diverged and module.num_steps == 5
    assert module.loss_history[-1] < 0.05 * before
    assert len(starts) == 5 and starts[0] == 0 and starts == sorted(set(starts))  # before each step


def test_a_layer_loss_added_to_a_scale_free_preset_weighs_its_layers_relatively(exemplar):
    # absolute, the full-resolution layers outweighed the rest: coloured speckle (chroma 10x)
    added = TextureSynthesis(exemplar, size=16, seed=0, losses={"sliced_wasserstein": 1, "histogram": {"weight": 2}})
    assert added.loss_terms["sliced_wasserstein"].relative and added.loss_terms["histogram"].relative
    assert added.loss_terms["histogram"].weight == 2.0
    own = TextureSynthesis(exemplar, size=16, seed=0, losses={"sliced_wasserstein": {"relative": False}})
    assert not own.loss_terms["sliced_wasserstein"].relative  # the user's word wins
    listed = TextureSynthesis(exemplar, size=16, seed=0, losses=["histogram"])  # a list: its own defaults
    assert not listed.loss_terms["histogram"].relative
    reference = TextureSynthesis(exemplar, size=32, seed=0, preset="liu2016", weights="random",
                                 losses={"sliced_wasserstein": 1})
    assert not reference.loss_terms["sliced_wasserstein"].relative  # the weighted recipe stays absolute


def test_losses_of_an_image_of_another_size_or_shape_are_refused_in_one_line(exemplar):
    """The spectrum terms compare whole spectra; the error came from inside a loss, about a
    "target spectrum" the caller never made."""
    module = _module(exemplar, size=(24, 32))
    with pytest.raises(InvalidArgumentError, match=r"^compute_losses: image is 24x24, the output size is 32x24; "
                                                   r"resize it first$"):
        module.compute_losses(torch.rand(3, 24, 24))
    with pytest.raises(InvalidArgumentError, match=r"image must be \(3, H, W\) or \(B, 3, H, W\), got \(1, 1, 24, 32\)"):
        module.compute_losses(torch.rand(1, 24, 32))
    assert module.compute_losses(torch.rand(2, 3, 24, 32))["total"].dim() == 0


def test_losses_and_starting_images_take_arrays_images_and_paths_too(exemplar, tmp_path):
    from PIL import Image

    from texsynth.image_io import save_image

    module = _module(exemplar, size=24)
    image = torch.rand(1, 3, 24, 24)
    expected = float(module.compute_losses(image)["total"])
    array = image[0].permute(1, 2, 0).numpy()
    path = save_image(image[0], tmp_path / "start.png")
    assert float(module.compute_losses(array)["total"]) == pytest.approx(expected, rel=1e-6)
    assert float(module.compute_losses(path)["total"]) == pytest.approx(expected, rel=1e-2)  # 8-bit PNG

    for source in (array, Image.open(path), str(path)):
        module.reset_image(source)
        assert module.image.shape == (1, 3, 24, 24)
        assert (module.image.detach() - image).abs().max() < 1 / 255 + 1e-6
    with pytest.raises(InvalidArgumentError, match="starting image must be a path, PIL image"):
        module.reset_image(42)


def test_a_gray_exemplar_gives_gray_outputs_a_coloured_one_keeps_its_colour(exemplar):
    gray = exemplar.mean(dim=1, keepdim=True).expand_as(exemplar).contiguous()
    module = _module(gray, variations=2)
    fit(module, 1, logdir=False, progress_bar=False, quiet=True)
    assert module.gray_exemplar
    assert not torch.equal(module.image[:, 0], module.image[:, 1])  # optimized in colour: some drift
    outputs = module.outputs()
    assert torch.equal(outputs[:, 0], outputs[:, 1]) and torch.equal(outputs[:, 1], outputs[:, 2])
    torch.testing.assert_close(outputs[:, 0], module.image.detach().mean(dim=1).clamp(0, 1))
    coloured = _module(exemplar)
    assert not coloured.gray_exemplar and not torch.equal(coloured.output()[0], coloured.output()[1])
