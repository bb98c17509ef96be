"""Stopping a synthesis when its loss stalls."""

from __future__ import annotations

import json

import pytest
import yaml

from texsynth import synthesize
from texsynth.callbacks import StopWhenStalled
from texsynth.cli import main
from texsynth.errors import InvalidArgumentError

from conftest import TINY_BACKBONE


def test_stall_rule_needs_patience_steps_of_small_relative_improvement():
    rule = StopWhenStalled(0.1, patience=2)
    assert not rule.stalled([10.0, 9.95])  # too short a history to judge
    assert not rule.stalled([10.0, 5.0, 4.9])  # the first step of the two improved a lot
    assert rule.stalled([10.0, 9.5, 9.0])  # 5% and 5.3%: both under 10%
    assert not rule.stalled([10.0, 9.5, 8.0])
    assert rule.stalled([-10.0, -10.5, -11.0]) and not rule.stalled([-10.0, -12.0, -14.0])  # relative to |loss|
    assert rule.stalled([10.0, 10.5, 11.0])  # getting worse is not improving
    assert StopWhenStalled(0.5, patience=1).stalled([4.0, 3.0])  # 25% < 50%


@pytest.mark.parametrize("bad", [0, 1, -0.5, 2.0, "x"])
def test_bad_fractions_are_refused(bad):
    with pytest.raises(InvalidArgumentError, match="stop_when_stalled must be a fraction"):
        StopWhenStalled(bad)


def test_a_stalled_run_stops_before_its_steps_and_says_so(exemplar):
    full = synthesize(exemplar, **TINY_BACKBONE, steps=12, seed=0, lbfgs={"max_iter": 2}, accelerator="cpu")
    # a threshold this high stops the run as soon as two steps improve by less than 90%
    stopped = synthesize(exemplar, **TINY_BACKBONE, steps=12, seed=0, lbfgs={"max_iter": 2}, accelerator="cpu",
                         stop_when_stalled=0.9)
    assert full.steps == 12 and not full.module.stalled
    assert 3 <= stopped.steps < 12 and stopped.module.stalled
    history = stopped.module.loss_history
    assert all(before - after < 0.9 * abs(before) for before, after in zip(history[-3:], history[-2:]))
    # the steps it did run are the same as the full run's
    assert history == pytest.approx(full.module.loss_history[: stopped.steps])


def test_cli_option_is_reported_written_to_the_config_and_checked(tmp_path, capsys):
    out = tmp_path / "t.png"
    args = ["synthesize", "weave", "-o", str(out), "--exemplar-size", "32", "--steps", "12", "--max-iter", "2",
            "--backbone", "random_pyramid", "--no-log", "--json", "--seed", "1"]
    assert main([*args, "--stop-when-stalled", "0.9"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stalled"] is True and summary["steps"] < 12
    assert yaml.safe_load((tmp_path / "t.texsynth.yaml").read_text())["stop_when_stalled"] == 0.9
    assert main([*args, "--stop-when-stalled", "1.5"]) == 2
    assert "--stop-when-stalled must be a fraction in (0, 1), got 1.5" in capsys.readouterr().err
