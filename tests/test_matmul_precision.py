"""--matmul-precision: float32 products at a lower internal precision during a run, restored after."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml

import texsynth
from texsynth.callbacks import MATMUL_PRECISIONS, MatmulPrecision
from texsynth.cli import build_parser, main
from texsynth.errors import InvalidArgumentError
from texsynth.image_io import save_image
from texsynth.losses import gram_matrix

from conftest import TINY_BACKBONE


class RecordPrecision(L.Callback):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_batch_start(self, *args) -> None:
        self.seen.append(torch.get_float32_matmul_precision())


def test_run_uses_the_precision_and_restores_the_previous_one(exemplar):
    before = torch.get_float32_matmul_precision()
    recorder = RecordPrecision()
    texsynth.synthesize(exemplar, **TINY_BACKBONE, steps=2, lbfgs={"max_iter": 2}, accelerator="cpu",
                        matmul_precision="medium", callbacks=[recorder])
    assert recorder.seen == ["medium", "medium"]
    assert torch.get_float32_matmul_precision() == before


def test_precision_is_restored_when_the_run_fails(exemplar):
    class Boom(L.Callback):
        def on_train_batch_start(self, *args) -> None:
            raise RuntimeError("boom")

    before = torch.get_float32_matmul_precision()
    with pytest.raises(RuntimeError, match="boom"):
        texsynth.synthesize(exemplar, **TINY_BACKBONE, steps=1, accelerator="cpu",
                            matmul_precision="medium", callbacks=[Boom()])
    assert torch.get_float32_matmul_precision() == before


def test_per_backend_settings_made_by_the_caller_are_restored(exemplar):
    before = torch.backends.mkldnn.matmul.fp32_precision
    try:
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"  # torch's newer, per-backend API
        recorder = RecordPrecision()
        texsynth.synthesize(exemplar, **TINY_BACKBONE, steps=1, lbfgs={"max_iter": 2}, accelerator="cpu",
                            matmul_precision="highest", callbacks=[recorder])
        assert recorder.seen == ["highest"]
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
        torch.set_float32_matmul_precision("highest")


def test_bad_precision_is_named():
    with pytest.raises(InvalidArgumentError, match="matmul_precision must be one of highest, high, medium, got 'low'"):
        MatmulPrecision("low")


def test_gram_at_medium_precision_stays_close_to_float32():
    features = torch.rand(1, 64, 48, 48)
    exact = gram_matrix(features.double()).float()
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        rounded = gram_matrix(features)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert ((rounded - exact).norm() / exact.norm()) < 1e-2


def test_cli_choices_match_the_callback():
    parser = build_parser()
    action = next(a for sub in parser._subparsers._group_actions for p in sub.choices.values()
                  for a in p._actions if a.dest == "matmul_precision")
    assert tuple(action.choices) == MATMUL_PRECISIONS


def test_cli_writes_it_to_the_run_config_and_rejects_bad_values(tmp_path, capsys):
    args = ["synthesize", "weave", "-o", str(tmp_path / "t.png"), "--exemplar-size", "32", "--steps", "1",
            "--max-iter", "2", "--backbone", "random_pyramid", "--no-log", "--no-progress"]
    assert main([*args, "--matmul-precision", "medium"]) == 0
    assert yaml.safe_load((tmp_path / "t.texsynth.yaml").read_text())["matmul_precision"] == "medium"
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--matmul-precision", "low"])
    assert exit_info.value.code == 2
    assert "--matmul-precision: invalid choice: 'low'" in capsys.readouterr().err


def test_batch_rejects_a_bad_precision_before_launching(tmp_path, exemplar):
    save_image(exemplar, tmp_path / "src" / "a.png")
    with pytest.raises(InvalidArgumentError, match="matmul_precision must be one of"):
        texsynth.batch(tmp_path / "src", tmp_path / "out", matmul_precision="low", accelerator="cpu")
    assert not (tmp_path / "out").exists()


class RecordFitStartPrecision(L.Callback):
    """Callbacks' on_fit_start runs just before the module's, which computes the targets."""

    def __init__(self) -> None:
        self.at_fit_start: str | None = None

    def on_fit_start(self, *args) -> None:
        self.at_fit_start = torch.get_float32_matmul_precision()


def test_targets_are_computed_at_full_precision(exemplar):
    recorder, fit_start = RecordPrecision(), RecordFitStartPrecision()
    texsynth.synthesize(exemplar, **TINY_BACKBONE, steps=1, lbfgs={"max_iter": 2}, accelerator="cpu",
                        matmul_precision="medium", callbacks=[fit_start, recorder])
    assert fit_start.at_fit_start == "highest"
    assert recorder.seen == ["medium"]


class FakeRun:
    def __init__(self, losses: list[float]) -> None:
        self.loss_history = losses
        self.num_steps = len(losses)


def run_callback(callback: MatmulPrecision, histories: list[list[float]]) -> list[str]:
    """The precision after each step of a run whose loss history grows as given."""
    seen = []
    callback.setup(None, None, "fit")
    try:
        callback.on_train_start(None, None)
        for history in histories:
            callback.on_train_batch_end(None, FakeRun(history))
            seen.append(torch.get_float32_matmul_precision())
    finally:
        callback.teardown(None, None, "fit")
    return seen


def test_falls_back_to_full_precision_once_a_step_stalls():
    callback = MatmulPrecision("medium")
    seen = run_callback(callback, [[1.0], [1.0, 0.5], [1.0, 0.5, 0.49999], [1.0, 0.5, 0.49999, 0.3]])
    assert seen == ["medium", "medium", "highest", "highest"]  # and stays there
    assert callback.fell_back_at_step == 3
    assert torch.get_float32_matmul_precision() == "highest"  # the process's own setting, restored


def test_improving_runs_and_disabled_fallback_keep_the_lower_precision():
    improving = [[1.0], [1.0, 0.9], [1.0, 0.9, 0.85]]
    assert run_callback(MatmulPrecision("medium"), improving) == ["medium"] * 3
    stalled = [[1.0], [1.0, 1.0]]
    kept = MatmulPrecision("medium", fall_back_below=None)
    assert run_callback(kept, stalled) == ["medium", "medium"] and kept.fell_back_at_step is None


@pytest.mark.parametrize("bad", [0, 1, -0.1, True, "0.01"])
def test_bad_fallback_threshold_is_named(bad):
    with pytest.raises(InvalidArgumentError, match="fall_back_below must be a fraction in"):
        MatmulPrecision("medium", fall_back_below=bad)
