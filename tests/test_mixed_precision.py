"""Mixed precision: a bfloat16 backbone, statistics and losses in float32 (CPU autocast here;
the same code path runs under CUDA autocast)."""

from __future__ import annotations

import logging
import warnings

import torch

from conftest import TINY_BACKBONE
from texsynth import TextureSynthesis
from texsynth.api import fit, synthesize
from texsynth.losses.gram import gram_matrix


# absolute sliced Wasserstein terms: large enough that bfloat16 rounding shows in the gradient
MANY_LOSSES = {"gram": {"weight": 1.0}, "mean_covariance": {"weight": 1.0},
               "sliced_wasserstein": {"weight": 1.0, "resample": False, "relative": False},
               "spectrum": {"weight": 1.0}}


def _bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_gram_matrix_and_its_gradient_stay_float32_under_autocast():
    torch.manual_seed(0)
    features = torch.rand(2, 16, 12, 12, requires_grad=True)
    weights = torch.randn(2, 16, 16)
    expected = gram_matrix(features)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), features)
    with _bf16_autocast():
        gram = gram_matrix(features)
        (grad,) = torch.autograd.grad((gram * weights).sum(), features)
    assert gram.dtype == torch.float32 and grad.dtype == torch.float32
    # bfloat16 products would be off by ~1e-3 relative
    torch.testing.assert_close(gram, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_every_loss_is_float32_on_the_bf16_backbone_features(exemplar):
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, losses=MANY_LOSSES, seed=0)
    with torch.no_grad(), _bf16_autocast():
        terms = module.compute_losses()
        features = module._features(module.image)
    assert {f.dtype for f in features.values()} == {torch.bfloat16}  # the backbone does run in bf16
    with torch.no_grad():  # the same bf16 features, statistics in float32 outside autocast
        expected = {name: loss.weight * loss(module.image, features) for name, loss in module.loss_terms.items()}
    for name, value in expected.items():
        assert terms[name].dtype == torch.float32, name
        torch.testing.assert_close(terms[name], value, rtol=1e-5, atol=0, msg=name)


def test_bf16_mixed_gradient_has_a_bf16_backbone_and_float32_statistics(exemplar):
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, losses=MANY_LOSSES, seed=0,
                               lbfgs={"max_iter": 1, "line_search_fn": None})
    start = module.image.detach().clone().requires_grad_(True)
    with _bf16_autocast():
        total = module.compute_losses(start)["total"]
    (expected,) = torch.autograd.grad(total, start)  # backward outside autocast
    with _bf16_autocast():
        total = module.compute_losses(start)["total"]
        (under_autocast,) = torch.autograd.grad(total, start)
    assert (under_autocast - expected).norm() > 1e-4 * expected.norm()  # the test can tell them apart
    # one step of one evaluation: the image's gradient is the one at the start (of the scaled
    # objective that L-BFGS minimizes)
    fit(module, 1, logdir=False, progress_bar=False, quiet=True, accelerator="cpu", precision="bf16-mixed")
    scale = module.lbfgs_options["loss_scale"]
    torch.testing.assert_close(module.image.grad, expected * scale, rtol=1e-5, atol=1e-7 * scale)


def test_bf16_mixed_synthesis_on_cpu_lowers_the_loss_and_keeps_a_float32_image(exemplar):
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0)
    with torch.no_grad():
        before = float(module.compute_losses()["total"])
    fit(module, 3, logdir=False, progress_bar=False, quiet=True, accelerator="cpu", precision="bf16-mixed")
    assert module.num_steps == 3 and not module.diverged
    assert module.image.dtype == torch.float32
    assert module.last_losses["total"].dtype == torch.float32
    assert module.loss_history[-1] < 0.2 * before


def test_16_bit_true_precisions_are_refused_with_the_mixed_ones_named(exemplar):
    """Lightning's "-true" precisions convert the image itself; they crashed with a dtype
    mismatch traceback inside the backbone."""
    import lightning as L
    import pytest

    from texsynth import InvalidArgumentError

    for precision in ("16-true", "bf16-true"):
        module = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0)
        with pytest.raises(InvalidArgumentError, match=f"precision '{precision}' would store the image in 16 bits"):
            fit(module, 1, logdir=False, progress_bar=False, quiet=True, precision=precision)
        assert module.num_evals == 0
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0)  # a Trainer of one's own
    trainer = L.Trainer(max_steps=1, precision="bf16-true", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    with pytest.raises(InvalidArgumentError, match="use bf16-mixed or 16-mixed"):
        trainer.fit(module)
    assert module.num_evals == 0


def test_16_mixed_on_a_cpu_runs_as_bf16_mixed_and_texsynth_says_so_once(exemplar, caplog):
    options = dict(steps=1, size=32, seed=0, coarse_levels=1, coarse_steps=1, accelerator="cpu", quiet=True,
                   progress_bar=False, **TINY_BACKBONE)
    logger = logging.getLogger("texsynth")
    logger.addHandler(caplog.handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            half = synthesize(exemplar, precision="16-mixed", **options)  # two Trainers: coarse and full size
    finally:
        logger.removeHandler(caplog.handler)
    said = [record.getMessage() for record in caplog.records if "16-mixed" in record.getMessage()]
    assert len(said) == 1 and "bf16-mixed" in said[0]
    assert not [warning for warning in caught if "fp16" in str(warning.message)]  # Lightning's, once per Trainer
    assert torch.equal(half.image, synthesize(exemplar, precision="bf16-mixed", **options).image)
