"""Offline-first defaults: never download implicitly, say which backbone was chosen."""

from __future__ import annotations

import logging

import pytest

from texsynth import TextureSynthesis
from texsynth.backbones.vgg import imagenet_weights_path
from texsynth.recipe import default_preset_name


@pytest.fixture
def texsynth_log(caplog):
    logger = logging.getLogger("texsynth")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def test_without_cached_weights_the_weight_free_recipe_is_chosen(torch_home, no_network, texsynth_log, exemplar):
    module = TextureSynthesis(exemplar, seed=0)
    assert module.backbone_name == "random_pyramid" and module.preset.name == "weight_free"
    assert module.hparams["backbone"] == "random_pyramid"
    lines = [r.getMessage() for r in texsynth_log.records]
    assert len(lines) == 1 and "random_pyramid" in lines[0] and "download-weights" in lines[0]
    assert not (torch_home / "hub").exists()  # nothing was downloaded or even attempted


def test_with_cached_weights_vgg19_is_chosen(torch_home, texsynth_log):
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"cached")
    assert default_preset_name() == "vgg19"
    assert "vgg19" in texsynth_log.records[-1].getMessage()


def test_python_api_batch_and_cli_share_the_default_step_count():
    import inspect

    from texsynth import batch, synthesize
    from texsynth.cli import build_parser
    from texsynth.presets import DEFAULT_STEPS

    assert inspect.signature(synthesize).parameters["steps"].default == DEFAULT_STEPS
    assert inspect.signature(batch).parameters["steps"].default == DEFAULT_STEPS
    assert build_parser().parse_args(["synthesize", "weave", "-o", "x.png"]).steps == DEFAULT_STEPS
