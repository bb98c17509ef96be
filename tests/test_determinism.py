"""Same seed, same image on GPUs too: deterministic kernels for the run, restored after."""

from __future__ import annotations

import os
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml

from conftest import TINY_BACKBONE
from texsynth import TextureSynthesis, synthesize
from texsynth.api import fit
from texsynth.callbacks import CUBLAS_WORKSPACE_CONFIG, DeterministicOnGPU
from texsynth.cli import main
from texsynth.trainer import make_trainer


def _trainer_on(device: str) -> SimpleNamespace:
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


def _flags() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.utils.deterministic.fill_uninitialized_memory, torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark, os.environ.get(CUBLAS_WORKSPACE_CONFIG))


@pytest.fixture
def restore_flags(monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE_CONFIG, raising=False)
    before = _flags()
    yield before
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.utils.deterministic.fill_uninitialized_memory = before[2]
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[3], before[4]


def test_a_gpu_run_gets_deterministic_kernels_and_the_settings_come_back(restore_flags):
    torch.backends.cudnn.benchmark = True  # a user's setting, to be restored
    before = _flags()
    callback = DeterministicOnGPU()
    callback.setup(_trainer_on("cuda"), None, "fit")
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # a loss without such a kernel warns, not fails
    assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ[CUBLAS_WORKSPACE_CONFIG] == ":4096:8"
    callback.teardown(_trainer_on("cuda"), None, "fit")
    assert _flags() == before


def test_a_failed_gpu_run_restores_the_settings_too(restore_flags):
    callback = DeterministicOnGPU()
    callback.setup(_trainer_on("cuda"), None, "fit")
    callback.on_exception(_trainer_on("cuda"), None, RuntimeError("boom"))
    assert _flags() == restore_flags


def test_a_cpu_run_changes_nothing(restore_flags):
    callback = DeterministicOnGPU()
    callback.setup(_trainer_on("cpu"), None, "fit")
    assert _flags() == restore_flags


def test_the_trainer_has_it_unless_opted_out():
    def has(trainer) -> bool:
        return any(isinstance(c, DeterministicOnGPU) for c in trainer.callbacks)

    assert has(make_trainer(1, logdir=False, accelerator="cpu", progress_bar=False))
    assert not has(make_trainer(1, logdir=False, accelerator="cpu", progress_bar=False, deterministic_on_gpu=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_same_seed_same_image_on_a_gpu(exemplar):
    images = []
    for _ in range(2):
        module = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=3, lbfgs={"max_iter": 4})
        fit(module, 3, logdir=False, progress_bar=False, quiet=True, accelerator="gpu")
        images.append(module.output())
    assert torch.equal(images[0], images[1])


class RecordDeterminism(L.Callback):
    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_train_batch_start(self, trainer, *args) -> None:
        self.seen.append(any(isinstance(c, DeterministicOnGPU) for c in trainer.callbacks))


@pytest.mark.parametrize("option, expected", [({}, True), ({"deterministic_on_gpu": False}, False)])
def test_synthesize_passes_the_choice_to_the_trainer(exemplar, option, expected):
    recorder = RecordDeterminism()
    synthesize(exemplar, **TINY_BACKBONE, steps=1, lbfgs={"max_iter": 2}, accelerator="cpu", callbacks=[recorder],
               **option)
    assert recorder.seen == [expected]


def test_cli_opt_out_is_used_recorded_and_read_back_from_the_config(tmp_path, monkeypatch):
    seen: list[bool] = []

    def recording_make_trainer(*args, **kwargs):
        seen.append(kwargs["deterministic_on_gpu"])
        return make_trainer(*args, **kwargs)

    monkeypatch.setattr("texsynth.api.make_trainer", recording_make_trainer)
    args = ["synthesize", "weave", "--exemplar-size", "32", "--steps", "1", "--max-iter", "2",
            "--backbone", "random_pyramid", "--no-log", "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "default.png")]) == 0
    assert main([*args, "-o", str(tmp_path / "fast.png"), "--nondeterministic-gpu"]) == 0
    config = tmp_path / "fast.texsynth.yaml"
    assert yaml.safe_load((tmp_path / "default.texsynth.yaml").read_text())["deterministic_on_gpu"] is True
    assert yaml.safe_load(config.read_text())["deterministic_on_gpu"] is False
    assert main(["synthesize", "--config", str(config), "-o", str(tmp_path / "again.png")]) == 0
    assert seen == [True, True, False, False, False, False]  # each run: its half-size stage, then the full size
