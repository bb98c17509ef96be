"""Coarse-to-fine synthesis and starting from a given image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_BACKBONE
from texsynth import TextureSynthesis, synthesize
from texsynth.api import fit
from texsynth.errors import InvalidArgumentError
from texsynth.multiscale import CoarseSchedule, coarse_to_fine_start


def test_reset_image_resizes_a_smaller_start_and_broadcasts_it_over_variations(exemplar):
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, size=32, variations=2, seed=0)
    start = torch.rand(3, 16, 16)
    module.reset_image(start)
    expected = F.interpolate(start[None], size=(32, 32), mode="bicubic", align_corners=False)[0]
    torch.testing.assert_close(module.image.detach()[0], expected)
    torch.testing.assert_close(module.image.detach()[1], expected)
    with pytest.raises(InvalidArgumentError, match="starting image must be"):
        module.reset_image(torch.rand(1, 16, 16))


def test_coarse_stages_run_at_halving_sizes_from_downscaled_exemplars_and_seed_the_full_size(exemplar):
    options = {**TINY_BACKBONE, "lbfgs": {"max_iter": 3}}
    module = TextureSynthesis(exemplar, size=32, seed=0, **options)
    seen = []

    def run(stage, steps):
        seen.append((stage.output_size, tuple(stage.exemplar.shape[-2:]), steps))
        fit(stage, steps, logdir=False, progress_bar=False, quiet=True, accelerator="cpu")

    stages = coarse_to_fine_start(module, 2, 2, run, dict(options))
    assert seen == [((8, 8), (8, 8), 2), ((16, 16), (16, 16), 2)]
    assert all(stage.num_evals > 0 for stage in stages)
    # the second stage started from the first one's result, the full size from the second's
    last = stages[-1].outputs()
    torch.testing.assert_close(module.image.detach(),
                               F.interpolate(last, size=(32, 32), mode="bicubic", align_corners=False))
    # a coarse start lowers the full-size loss before any full-size step
    fresh = TextureSynthesis(exemplar, size=32, seed=0, **options)
    with torch.no_grad():
        assert module.compute_losses()["total"] < fresh.compute_losses()["total"]


def test_stages_too_small_for_the_backbone_are_skipped(exemplar):
    options = {"backbone": "vgg19", "weights": "random", "losses": {"gram": {"layers": ["pool2"]}}}
    module = TextureSynthesis(exemplar, size=32, seed=0, **options)  # pool2 needs at least 4 pixels
    sizes = []
    coarse_to_fine_start(module, 4, 1, lambda stage, steps: sizes.append(stage.output_size), dict(options))
    assert sizes == [(4, 4), (8, 8), (16, 16)]  # 1/16 (2x2) was skipped


def test_synthesize_runs_coarse_levels_and_the_cli_records_them(exemplar, tmp_path, capsys):
    result = synthesize(exemplar, steps=1, size=32, seed=0, coarse_levels=1, accelerator="cpu",
                        lbfgs={"max_iter": 2}, **TINY_BACKBONE)
    assert result.image.shape == (3, 32, 32) and result.seconds > 0
    with pytest.raises(InvalidArgumentError, match="coarse levels must be a non-negative integer"):
        synthesize(exemplar, steps=1, size=32, seed=0, coarse_levels=-1, **TINY_BACKBONE)

    from texsynth.cli import main
    from texsynth.config import read_config
    from texsynth.image_io import save_image

    config = tmp_path / "tiny.yaml"
    config.write_text("backbone: random_multiscale\nbackbone_options: {kernel_sizes: [3, 5], filters: 8}\n")
    save_image(exemplar[0], tmp_path / "ex.png")
    out = tmp_path / "out.png"
    assert main(["synthesize", str(tmp_path / "ex.png"), "-o", str(out), "--config", str(config), "--steps", "1",
                 "--max-iter", "2", "--coarse-levels", "1", "--no-log", "--no-progress", "--seed", "0"]) == 0
    assert read_config(tmp_path / "out.texsynth.yaml")["coarse_levels"] == 1
    assert main(["synthesize", str(tmp_path / "ex.png"), "-o", str(out), "--coarse-levels", "-1"]) == 2
    assert "--coarse-levels must be >= 0" in capsys.readouterr().err


def _fits_by_size(monkeypatch):
    """Record (output size, steps) of every fit ``synthesize`` runs, coarse stages included."""
    import texsynth.api as api

    runs, real_fit = [], api.fit

    def recording_fit(module, steps, **options):
        runs.append((module.output_size, steps))
        return real_fit(module, steps, **options)

    monkeypatch.setattr(api, "fit", recording_fit)
    return runs


def test_coarse_steps_sets_the_coarse_stages_budget_apart_from_the_full_size(exemplar, monkeypatch):
    runs = _fits_by_size(monkeypatch)
    result = synthesize(exemplar, steps=3, size=32, seed=0, coarse_levels=2, coarse_steps=1, accelerator="cpu",
                        lbfgs={"max_iter": 2}, **TINY_BACKBONE)
    assert runs == [((8, 8), 1), ((16, 16), 1), ((32, 32), 3)]
    assert result.steps == 3
    runs.clear()
    synthesize(exemplar, steps=2, size=32, seed=0, coarse_levels=1, accelerator="cpu",
               lbfgs={"max_iter": 2}, **TINY_BACKBONE)
    assert runs == [((16, 16), 2), ((32, 32), 2)]  # unset: as many as the full size
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="coarse steps must be a positive integer"):
            synthesize(exemplar, steps=1, size=32, seed=0, coarse_levels=1, coarse_steps=bad, **TINY_BACKBONE)


def test_a_coarse_schedule_takes_each_setting_from_the_call_or_else_the_preset():
    from texsynth.presets import get_preset

    preset = get_preset("weight_free")
    assert CoarseSchedule.resolve(preset) == CoarseSchedule(preset.coarse_levels, preset.coarse_steps,
                                                            preset.coarse_layers)
    assert CoarseSchedule.resolve(preset, levels=0, layers="all") == CoarseSchedule(0, preset.coarse_steps, "all")
    assert CoarseSchedule(1, None, "all").steps_per_stage(7) == 7  # None: as many as the full size
    assert CoarseSchedule(1, 3, "all").steps_per_stage(7) == 3
    with pytest.raises(InvalidArgumentError, match="coarse steps must be a positive integer, got 0"):
        CoarseSchedule.resolve(preset, steps=0)


def test_a_presets_coarse_steps_apply_unless_overridden(exemplar, monkeypatch):
    from texsynth.presets import PRESETS, Preset, register_preset

    register_preset(Preset(name="tiny_warm_start", description="test", backbone="random_multiscale",
                           backbone_options={"kernel_sizes": (3, 5), "filters": 8},
                           losses={"gram": {"relative": True}}, coarse_levels=1, coarse_steps=1))
    try:
        runs = _fits_by_size(monkeypatch)
        result = synthesize(exemplar, steps=2, size=32, seed=0, preset="tiny_warm_start", accelerator="cpu",
                            lbfgs={"max_iter": 2})
        assert runs == [((16, 16), 1), ((32, 32), 2)]
        assert result.coarse == CoarseSchedule(levels=1, steps=1, layers="all")
        runs.clear()
        result = synthesize(exemplar, steps=2, size=32, seed=0, preset="tiny_warm_start", coarse_steps=3,
                            accelerator="cpu", lbfgs={"max_iter": 2})
        assert runs == [((16, 16), 3), ((32, 32), 2)]
        assert result.coarse == CoarseSchedule(levels=1, steps=3, layers="all")
    finally:
        PRESETS.remove("tiny_warm_start")
    with pytest.raises(InvalidArgumentError, match="coarse steps must be a positive integer, got 0"):
        Preset(name="bad", description="", backbone="vgg19", coarse_steps=0)


def _tiny_cli_run(exemplar, tmp_path, *options: str) -> dict:
    """``texsynth synthesize`` with a tiny backbone, 1 step at 32x32 and ``options``; the run's YAML."""
    from texsynth.cli import main
    from texsynth.config import read_config
    from texsynth.image_io import save_image

    save_image(exemplar[0], tmp_path / "ex.png")
    config = tmp_path / "tiny.yaml"
    config.write_text("backbone: random_multiscale\nbackbone_options: {kernel_sizes: [3, 5], filters: 8}\n")
    assert main(["synthesize", str(tmp_path / "ex.png"), "-o", str(tmp_path / "out.png"), "--config", str(config),
                 "--steps", "1", "--max-iter", "2", "--no-log", "--no-progress", "--seed", "0", *options]) == 0
    return read_config(tmp_path / "out.texsynth.yaml")


def test_the_cli_takes_and_records_coarse_steps(exemplar, tmp_path, capsys):
    from texsynth.cli import main

    assert _tiny_cli_run(exemplar, tmp_path, "--coarse-levels", "1", "--coarse-steps", "2")["coarse_steps"] == 2
    out = tmp_path / "out.png"
    assert main(["synthesize", str(tmp_path / "ex.png"), "-o", str(out), "--coarse-steps", "0"]) == 2
    assert "--coarse-steps must be" in capsys.readouterr().err


def test_batch_refuses_bad_coarse_settings_before_starting(exemplar, tmp_path):
    from texsynth import batch
    from texsynth.image_io import save_image

    save_image(exemplar[0], tmp_path / "src" / "a.png")
    with pytest.raises(InvalidArgumentError, match="coarse steps must be a positive integer, got 0"):
        batch(tmp_path / "src", tmp_path / "out", coarse_levels=1, coarse_steps=0, **TINY_BACKBONE)
    with pytest.raises(InvalidArgumentError, match="coarse layers must be one of all, matched"):
        batch(tmp_path / "src", tmp_path / "out", coarse_levels=1, coarse_layers="deep", **TINY_BACKBONE)
    with pytest.raises(InvalidArgumentError, match=r"coarse starts \(2\) need a coarse stage"):
        batch(tmp_path / "src", tmp_path / "out", coarse_starts=2, **TINY_BACKBONE)  # this preset has no stage
    assert not (tmp_path / "out").exists()


PYRAMID = {"backbone": "random_pyramid", "backbone_options": {"filters": 4},
           "losses": {"gram": {"relative": True, "layer_weights": {"level0": 2.0, "level1": 3.0, "level2": 5.0}}}}


def _stage_layers(module, levels, layers, options):
    seen = []
    coarse_to_fine_start(module, levels, 1, lambda stage, steps: seen.append(
        (stage.output_size, dict(stage.loss_terms["gram"].layer_weights), sorted(stage.loss_terms))), options,
        layers=layers)
    return seen


def test_matched_coarse_stages_keep_the_layers_whose_window_the_full_size_has(exemplar):
    module = TextureSynthesis(exemplar, size=64, seed=0, **PYRAMID)
    # receptive fields 11, 25, 53 pixels: at 1/2 the deepest sees 106 output pixels, more than the full size's 53
    losses = ["chroma_spectrum", "gram", "spectrum", "value_range"]  # the weight-free preset's, in every stage
    assert _stage_layers(module, 2, "matched", dict(PYRAMID)) == [
        ((16, 16), {"level0": 2.0}, losses),
        ((32, 32), {"level0": 2.0, "level1": 3.0}, losses),
    ]
    assert _stage_layers(module, 1, "all", dict(PYRAMID)) == [
        ((32, 32), {"level0": 2.0, "level1": 3.0, "level2": 5.0}, losses),
    ]
    # a loss on one scale only keeps it (its finest layers) rather than dropping out
    single = {**PYRAMID, "losses": {"gram": {"relative": True, "layers": ["level1"]}}}
    module = TextureSynthesis(exemplar, size=64, seed=0, **single)
    assert [weights for _, weights, _ in _stage_layers(module, 1, "matched", single)] == [{"level1": 1.0}]


def test_matched_coarse_stages_keep_every_layer_when_the_windows_are_unknown(exemplar, caplog):
    import logging

    from texsynth.losses import GramLoss

    options = {**PYRAMID, "losses": [GramLoss(relative=True)]}  # an object: no options to rebuild it from
    module = TextureSynthesis(exemplar, size=64, seed=0, **options)
    logger = logging.getLogger("texsynth")
    logger.addHandler(caplog.handler)
    try:
        seen = _stage_layers(module, 1, "matched", options)
    finally:
        logger.removeHandler(caplog.handler)
    assert list(seen[0][1]) == ["level0", "level1", "level2"]
    assert "the 1/2 stage keeps every layer" in caplog.text


def test_coarse_layers_come_from_the_preset_unless_given_and_bad_values_are_refused(exemplar, monkeypatch, tmp_path,
                                                                                   capsys):
    import texsynth.api as api
    from texsynth.presets import PRESETS, Preset, register_preset

    chosen = []
    real = api.coarse_to_fine_start
    monkeypatch.setattr(api, "coarse_to_fine_start",
                        lambda *args, layers, **kw: chosen.append(layers) or real(*args, layers=layers, **kw))
    register_preset(Preset(name="tiny_matched", description="test", backbone="random_pyramid",
                           backbone_options={"filters": 4}, losses={"gram": {"relative": True}},
                           coarse_levels=1, coarse_steps=1, coarse_layers="matched"))
    try:
        for given in (None, "all"):
            synthesize(exemplar, steps=1, size=64, seed=0, preset="tiny_matched", coarse_layers=given,
                       accelerator="cpu", lbfgs={"max_iter": 2})
    finally:
        PRESETS.remove("tiny_matched")
    assert chosen == ["matched", "all"]
    with pytest.raises(InvalidArgumentError, match="coarse layers must be one of all, matched, got 'deep'"):
        synthesize(exemplar, steps=1, size=32, seed=0, coarse_levels=1, coarse_layers="deep", **TINY_BACKBONE)
    with pytest.raises(InvalidArgumentError, match="coarse layers must be one of all, matched, got 'deep'"):
        Preset(name="bad", description="", backbone="vgg19", coarse_layers="deep")

    from texsynth.cli import main
    from texsynth.config import read_config
    from texsynth.image_io import save_image

    save_image(exemplar[0], tmp_path / "ex.png")
    out = tmp_path / "out.png"
    assert main(["synthesize", str(tmp_path / "ex.png"), "-o", str(out), "--backbone", "random_pyramid",
                 "--size", "48", "--steps", "1", "--max-iter", "2", "--coarse-levels", "1", "--coarse-steps", "1",
                 "--coarse-layers", "matched", "--no-log", "--no-progress", "--seed", "0"]) == 0
    assert read_config(tmp_path / "out.texsynth.yaml")["coarse_layers"] == "matched"
    with pytest.raises(SystemExit) as exit_info:
        main(["synthesize", str(tmp_path / "ex.png"), "-o", str(out), "--coarse-layers", "deep"])
    assert exit_info.value.code == 2 and "invalid choice: 'deep'" in capsys.readouterr().err


def test_several_coarse_starts_go_on_from_the_lowest_loss_per_variation(exemplar):
    options = {**TINY_BACKBONE, "lbfgs": {"max_iter": 2}, "variations": 2}
    module = TextureSynthesis(exemplar, size=32, seed=3, **options)
    runs = []

    def run(stage, steps):
        runs.append((stage.output_size, stage.seed))
        fit(stage, steps, logdir=False, progress_bar=False, quiet=True, accelerator="cpu")

    stages = coarse_to_fine_start(module, 2, 1, run, dict(options), starts=3)
    # three starts at 1/4 (the first from the run's own seed, as a plain run would), then one stage at 1/2
    assert [size for size, _ in runs] == [(8, 8)] * 3 + [(16, 16)]
    assert runs[0][1] == 3 and len({seed for _, seed in runs[:3]}) == 3
    assert len(stages) == 2 and stages[-1].num_evals > 0

    def stage_at(side, seed):
        exemplar_there = F.interpolate(module.exemplar.cpu(), size=(side, side), mode="bicubic", antialias=True,
                                       align_corners=False).clamp(0, 1)
        return TextureSynthesis(exemplar_there, size=side, exemplar_size=(side, side), seed=seed, **options)

    # redo the three starts and check that each variation went on from its own best one
    candidates = [stage_at(8, seed) for _, seed in runs[:3]]
    for candidate in candidates:
        fit(candidate, 1, logdir=False, progress_bar=False, quiet=True, accelerator="cpu")
    with torch.no_grad():
        losses = torch.tensor([[float(c.compute_losses(c.image[i:i + 1])["total"]) for i in range(2)]
                               for c in candidates])
    assert len(set(losses.flatten().tolist())) == 6
    assert stages[0].seed == runs[int(losses.sum(dim=1).argmin())][1]  # the start with the lowest total
    chosen = losses.argmin(dim=0).tolist()
    expected = torch.stack([candidates[k].outputs()[i] for i, k in enumerate(chosen)])
    # the stage at 1/2 started from the chosen images: refit it the same way and compare
    fresh = stage_at(16, 3)
    fresh.reset_image(F.interpolate(expected, size=(16, 16), mode="bicubic", align_corners=False))
    fit(fresh, 1, logdir=False, progress_bar=False, quiet=True, accelerator="cpu")
    torch.testing.assert_close(stages[-1].outputs(), fresh.outputs())


def test_one_coarse_start_is_the_plain_run(exemplar):
    options = {**TINY_BACKBONE, "lbfgs": {"max_iter": 2}}
    plain = synthesize(exemplar, steps=1, size=32, seed=0, coarse_levels=1, coarse_steps=1, accelerator="cpu", **options)
    one = synthesize(exemplar, steps=1, size=32, seed=0, coarse_levels=1, coarse_steps=1, coarse_starts=1,
                     accelerator="cpu", **options)
    torch.testing.assert_close(plain.image, one.image)
    assert one.coarse.starts == 1


def test_coarse_starts_are_checked_and_recorded(exemplar, tmp_path, capsys):
    from texsynth.cli import main

    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="coarse starts must be a positive integer"):
            synthesize(exemplar, steps=1, size=32, seed=0, coarse_levels=1, coarse_starts=bad, **TINY_BACKBONE)
    with pytest.raises(InvalidArgumentError, match=r"coarse starts \(2\) need a coarse stage"):
        synthesize(exemplar, steps=1, size=32, seed=0, coarse_levels=0, coarse_starts=2, **TINY_BACKBONE)
    config = _tiny_cli_run(exemplar, tmp_path, "--coarse-levels", "1", "--coarse-steps", "1", "--coarse-starts", "2")
    assert config["coarse_starts"] == 2
    assert main(["synthesize", str(tmp_path / "ex.png"), "-o", str(tmp_path / "out.png"), "--coarse-starts", "0"]) == 2
    assert "--coarse-starts must be a positive integer" in capsys.readouterr().err


def test_several_starts_without_a_coarse_stage_are_refused_or_lapse_with_the_preset_stage(exemplar):
    import dataclasses

    from texsynth.presets import Preset
    from texsynth.recipe import resolve_preset

    with pytest.raises(InvalidArgumentError, match=r"coarse starts \(2\) need a coarse stage"):
        Preset(name="p", description="", backbone="random_multiscale", coarse_starts=2)
    three_starts = dataclasses.replace(resolve_preset(None, "random_multiscale"), name="three",
                                       coarse_levels=1, coarse_steps=1, coarse_starts=3)
    assert CoarseSchedule.resolve(three_starts).starts == 3
    # the call turns the preset's coarse stage off: one start runs, and the schedule says so
    result = synthesize(exemplar, steps=1, size=32, seed=0, preset=three_starts, coarse_levels=0,
                        lbfgs={"max_iter": 2}, **TINY_BACKBONE)
    assert (result.coarse.levels, result.coarse.starts) == (0, 1)


def test_each_variation_goes_on_from_the_start_where_its_loss_is_lowest(exemplar):
    from texsynth.multiscale import best_per_variation, variation_losses

    first, second = (TextureSynthesis(exemplar, size=32, seed=seed, variations=2, **TINY_BACKBONE) for seed in (0, 1))
    # the exemplar itself matches every statistic: variation 0 is best in the first start, 1 in the second
    first.reset_image(torch.stack([exemplar[0], first.outputs()[1]]))
    second.reset_image(torch.stack([second.outputs()[0], exemplar[0]]))
    losses = [variation_losses(first), variation_losses(second)]
    assert losses[0][0] < losses[1][0] and losses[1][1] < losses[0][1]
    image = best_per_variation(losses, [first.outputs(), second.outputs()])
    torch.testing.assert_close(image, torch.cat([exemplar, exemplar]))
