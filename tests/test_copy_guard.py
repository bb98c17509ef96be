"""Stopping before the output becomes a copy of the exemplar (max_copy_score)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml

import texsynth.callbacks
from texsynth import synthesize
from texsynth.callbacks import StopBeforeCopying, self_similarity
from texsynth.cli import main
from texsynth.errors import InvalidArgumentError
from texsynth.examples import load_example
from texsynth.metrics import copy_score

from conftest import TINY_BACKBONE

RUN = dict(**TINY_BACKBONE, seed=0, lbfgs={"max_iter": 2}, accelerator="cpu")


def scripted_scores(monkeypatch, scores, exemplar_self_similarity=0.2):
    """Make the guard see ``scores`` one step after another, whatever the images are."""
    queue = list(scores)
    monkeypatch.setattr(texsynth.callbacks, "copy_score", lambda preds, target: torch.tensor(queue.pop(0)))
    monkeypatch.setattr(texsynth.callbacks, "self_similarity", lambda exemplar: exemplar_self_similarity)


def test_the_step_that_copies_is_undone_and_the_run_stops(exemplar, monkeypatch):
    two_steps = synthesize(exemplar, steps=2, **RUN)
    scripted_scores(monkeypatch, [0.2, 0.3, 0.9])
    guarded = synthesize(exemplar, steps=6, max_copy_score=0.5, **RUN)
    module = guarded.module
    assert module.stopped_before_copying and guarded.steps == 2 and len(module.loss_history) == 2
    assert module.copy_score == pytest.approx(0.3)  # the kept image's score, not the undone one's
    assert module.num_evals > two_steps.module.num_evals  # the third step's work was done, then undone
    assert torch.equal(guarded.image, two_steps.image)  # exactly the image after step 2
    assert guarded.losses == pytest.approx(two_steps.losses)  # final losses are the kept image's
    assert module.loss_history == pytest.approx(two_steps.module.loss_history)


def test_a_run_below_the_threshold_runs_all_its_steps_and_reports_the_score(exemplar):
    result = synthesize(exemplar, steps=3, max_copy_score=0.999, **RUN)
    assert result.steps == 3 and not result.module.stopped_before_copying
    assert result.module.copy_score == pytest.approx(float(copy_score(result.image, result.module.exemplar[0])))


def test_the_copy_score_is_logged_every_step(exemplar, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = synthesize(exemplar, steps=3, max_copy_score=0.999, logdir=tmp_path, **RUN)
    events = EventAccumulator(result.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    logged = events.Scalars("copy_score")
    assert len(logged) == 3
    assert [e.step for e in logged] == [e.step for e in events.Scalars("loss/total")]  # once per step
    assert logged[-1].value == pytest.approx(result.module.copy_score)


def test_an_output_that_is_the_exemplar_scores_as_a_copy(exemplar):
    shifted = torch.roll(exemplar[0], shifts=(5, 9), dims=(1, 2))
    noise = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert float(copy_score(shifted, exemplar)) > 0.9 > 0.5 > float(copy_score(noise, exemplar))


def test_a_periodic_exemplar_raises_the_threshold_to_its_own_self_similarity(exemplar, monkeypatch, caplog):
    scripted_scores(monkeypatch, [0.7, 0.75, 0.8], exemplar_self_similarity=0.72)
    logger = logging.getLogger("texsynth")
    logger.addHandler(caplog.handler)
    try:
        result = synthesize(exemplar, steps=3, max_copy_score=0.5, **RUN)
    finally:
        logger.removeHandler(caplog.handler)
    # 0.72 + 0.1 = 0.82: scores that would stop a stochastic texture's run are normal here
    assert result.steps == 3 and not result.module.stopped_before_copying
    assert "repeats itself" in caplog.text and "above 0.82 instead of 0.50" in caplog.text


def test_halves_that_share_a_patch_do_not_raise_the_threshold_of_an_exemplar_that_does_not_repeat(monkeypatch):
    """blotchy_0091's halves have a copy score of 0.91 (a shared patch), but it has no period:
    its new textures score 0.28, and the guard must keep the threshold asked for."""
    scripted_scores(monkeypatch, [0.2, 0.3, 0.6], exemplar_self_similarity=0.91)
    guarded = synthesize(load_example("cells", size=32), steps=6, max_copy_score=0.5, **RUN)
    assert guarded.module.stopped_before_copying and guarded.steps == 2


def test_self_similarity_tells_periodic_exemplars_from_stochastic_ones():
    generator = torch.Generator().manual_seed(0)
    tile = torch.rand(3, 16, 16, generator=generator)
    periodic = tile.repeat(1, 4, 4)  # 64x64, period 16
    stochastic = torch.rand(3, 64, 64, generator=generator)
    assert self_similarity(periodic) > 0.95 and self_similarity(stochastic) < 0.5


@pytest.mark.parametrize("bad", [0, 1, -0.2, 1.5, "x", True])
def test_bad_thresholds_are_refused(bad):
    with pytest.raises(InvalidArgumentError, match="max_copy_score must be a number in"):
        StopBeforeCopying(bad)


def test_cli_reports_it_writes_it_to_the_config_and_checks_it(tmp_path, capsys, monkeypatch):
    args = ["synthesize", "weave", "-o", str(tmp_path / "t.png"), "--exemplar-size", "32", "--steps", "4",
            "--max-iter", "2", "--backbone", "random_pyramid", "--no-log", "--json", "--seed", "1"]
    scripted_scores(monkeypatch, [0.2, 0.8])
    assert main([*args, "--max-copy-score", "0.5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stopped_before_copying"] is True and summary["steps"] == 1
    assert summary["copy_score"] == pytest.approx(0.2)
    assert yaml.safe_load((tmp_path / "t.texsynth.yaml").read_text())["max_copy_score"] == 0.5
    assert main([*args, "--max-copy-score", "2"]) == 2
    assert "--max-copy-score must be in (0, 1), got 2.0" in capsys.readouterr().err


def test_batch_checks_the_threshold_before_launching(tmp_path, exemplar):
    from texsynth import batch
    from texsynth.image_io import save_image

    save_image(exemplar, tmp_path / "src" / "a.png")
    with pytest.raises(InvalidArgumentError, match="max_copy_score must be a number"):
        batch(tmp_path / "src", tmp_path / "out", max_copy_score=3, accelerator="cpu")
    assert not (tmp_path / "out").exists()


def test_batch_manifest_records_which_items_stopped_before_copying(tmp_path, exemplar, monkeypatch):
    from texsynth import batch
    from texsynth.image_io import save_image
    from texsynth.manifest import Manifest

    save_image(exemplar, tmp_path / "src" / "a.png")
    scripted_scores(monkeypatch, [0.2, 0.9])
    result = batch(tmp_path / "src", tmp_path / "out", steps=4, max_copy_score=0.5, progress=False,
                   **{key: value for key, value in RUN.items() if key != "seed"})
    assert result.done == 1
    (record,) = Manifest(tmp_path / "out" / "manifest.jsonl").records()
    assert record["stopped_before_copying"] is True and record["steps"] == 1
    assert record["copy_score"] == pytest.approx(0.2) and record["stalled"] is False
