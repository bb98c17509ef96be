from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from texsynth.cli import main

RUN = ["--exemplar-size", "32", "--steps", "2", "--max-iter", "3", "--backbone", "random_pyramid",
       "--no-log", "--no-progress"]


def test_a_written_config_reproduces_the_run(tmp_path, capsys):
    first = tmp_path / "first.png"
    assert main(["synthesize", "weave", "-o", str(first), *RUN, "--loss", "spectrum=0.5", "--size", "40x32"]) == 0
    config_file = tmp_path / "first.texsynth.yaml"
    config = yaml.safe_load(config_file.read_text())
    assert config["exemplar"] == "weave" and config["size"] == "40x32" and isinstance(config["seed"], int)
    assert ["spectrum", {"mode": "color", "reduction": "mean", "weight": 0.5}] in config["losses"]
    assert config["lbfgs"]["max_iter"] == 3 and config["backbone"] == "random_pyramid"

    second = tmp_path / "second.png"
    assert main(["synthesize", "--config", str(config_file), "-o", str(second)]) == 0
    assert second.read_bytes() == first.read_bytes()
    assert yaml.safe_load((tmp_path / "second.texsynth.yaml").read_text())["seed"] == config["seed"]

    third = tmp_path / "third.png"  # a command-line option overrides the file
    assert main(["synthesize", "--config", str(config_file), "-o", str(third), "--seed", "99"]) == 0
    assert third.read_bytes() != first.read_bytes()


def test_loss_options_on_the_command_line_merge_over_the_preset_and_a_config(tmp_path):
    first = tmp_path / "first.png"
    assert main(["synthesize", "weave", "-o", str(first), *RUN, "--loss", "spectrum.mode=luminance",
                 "--loss", "sliced_wasserstein=0.5", "--loss", "sliced_wasserstein.num_directions=4",
                 "--loss", "gram.layers=[level0, level1]"]) == 0
    losses = dict(yaml.safe_load((tmp_path / "first.texsynth.yaml").read_text())["losses"])
    assert losses["spectrum"] == {"mode": "luminance", "reduction": "mean", "weight": 1.0}  # the preset's weight
    assert losses["sliced_wasserstein"]["num_directions"] == 4 and losses["sliced_wasserstein"]["weight"] == 0.5
    assert losses["sliced_wasserstein"]["relative"] is True  # the preset's default for an added loss
    assert losses["gram"]["layers"] == ["level0", "level1"] and losses["gram"]["relative"] is True
    second = tmp_path / "second.png"  # over the written config's list of losses
    assert main(["synthesize", "--config", str(tmp_path / "first.texsynth.yaml"), "-o", str(second),
                 "--loss", "spectrum.mode=color", "--loss", "sliced_wasserstein=0"]) == 0
    losses = dict(yaml.safe_load((tmp_path / "second.texsynth.yaml").read_text())["losses"])
    assert losses["spectrum"]["mode"] == "color" and "sliced_wasserstein" not in losses
    assert losses["gram"]["layers"] == ["level0", "level1"]


@pytest.mark.parametrize(
    "loss, message",
    [("spectrum.nope=1", "loss 'spectrum': SpectrumLoss.__init__() got an unexpected keyword argument 'nope'"),
     ("spectrum.=1", "expected NAME=WEIGHT or NAME.OPTION=VALUE"),
     ("spectrum.mode=[a", "value '[a' is not a YAML value"),
     ("spectrum.weight=heavy", "weight 'heavy' is not a number"),
     ("spectrum.mode=bogus", "spectrum mode must be one of")],
)
def test_bad_loss_options_are_one_line_errors(tmp_path, capsys, loss, message):
    assert main(["synthesize", "weave", "-o", str(tmp_path / "x.png"), *RUN, "--loss", loss]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "content, message",
    [("steps: 2\nbogus: 1\n", "unknown key(s) bogus"), ("- a\n- b\n", "expected a mapping"), ("a: [b\n", "not a readable YAML"),
     # argparse converts a file's strings as if typed, and blamed "argument --steps"
     ("steps: two\n", "run.yaml: steps: 'two' is not a valid int"),
     # YAML types the command line has not: each was a traceback deep in the run
     ("lbfgs: 3\n", "run.yaml: lbfgs: must be a mapping, got 3"),
     ("lbfgs: [1]\n", "run.yaml: lbfgs: must be a mapping, got [1]"),
     ("imports: 3\n", "run.yaml: imports: must be a module name or a list of them, got 3"),
     ("logdir: [a, b]\n", "run.yaml: logdir: must be a single value"),
     ("no_log: 3\n", "run.yaml: no_log: must be true or false, got 3"),
     # a single name was read letter by letter: "--import n"
     ("imports: nosuchmodule\n", "--import nosuchmodule: ModuleNotFoundError")],
)
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "run.yaml"
    path.write_text(content)
    assert main(["synthesize", "weave", "-o", str(tmp_path / "x.png"), "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_config_scalars_are_read_as_the_command_line_would(tmp_path, monkeypatch):
    """``logdir: 5`` is the folder "5" (it was a TypeError), and a size may be a number."""
    path = tmp_path / "run.yaml"
    path.write_text("logdir: 7\nsize: 16\nexemplar_size: 32\nsteps: 1\nlbfgs: {max_iter: 2}\nbackbone: random_pyramid\n")
    output = tmp_path / "x.png"
    monkeypatch.chdir(tmp_path)
    assert main(["synthesize", "weave", "-o", str(output), "--config", str(path), "--no-progress"]) == 0
    assert Image.open(output).size == (16, 16)
    assert any((tmp_path / "7").rglob("events.out.tfevents.*"))


def test_prepare_crops_resizes_and_skips_unreadable_files(tmp_path, capsys):
    source = tmp_path / "dtd"
    (source / "cracked").mkdir(parents=True)
    wide = np.zeros((40, 80, 3), dtype=np.uint8)
    wide[:, 20:60] = 255  # the centre square is white, the sides black
    Image.fromarray(wide).save(source / "cracked" / "a.jpg")
    Image.fromarray(np.full((30, 30), 128, dtype=np.uint8)).save(source / "b.png")
    (source / "cracked" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    destination = tmp_path / "prepared"
    assert main(["prepare", str(source), str(destination), "--size", "16"]) == 0
    captured = capsys.readouterr()
    assert "skipping" in captured.err and "broken.jpg" in captured.err
    assert "wrote 2 image(s)" in captured.out and "skipped 1" in captured.out
    with Image.open(destination / "cracked" / "a.png") as image:
        assert image.size == (16, 16)
        assert np.asarray(image).min() > 200  # the centre crop, not a squashed whole
    with Image.open(destination / "b.png") as image:
        assert image.size == (16, 16)
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before
    assert main(["prepare", str(tmp_path / "nowhere"), str(destination)]) == 2


def test_prepare_into_a_file_is_refused_before_any_image(tmp_path, capsys):
    source = tmp_path / "dtd"
    source.mkdir()
    Image.fromarray(np.full((30, 30), 128, dtype=np.uint8)).save(source / "b.png")
    in_the_way = tmp_path / "prepared"
    in_the_way.write_text("a file")
    assert main(["prepare", str(source), str(in_the_way), "--size", "16"]) == 2
    assert "prepared: exists and is not a folder" in capsys.readouterr().err
    assert in_the_way.read_text() == "a file"


def test_prepare_keeps_the_first_of_two_images_that_would_share_a_png(tmp_path, capsys):
    source = tmp_path / "dtd"
    source.mkdir()
    Image.fromarray(np.full((30, 30, 3), 250, dtype=np.uint8)).save(source / "a.jpg")
    Image.fromarray(np.full((30, 30, 3), 10, dtype=np.uint8)).save(source / "a.png")
    destination = tmp_path / "prepared"
    assert main(["prepare", str(source), str(destination), "--size", "16"]) == 0
    captured = capsys.readouterr()
    assert "wrote 1 image(s)" in captured.out and "skipped 1" in captured.out
    assert "a.png" in captured.err and "already written from a.jpg" in captured.err
    with Image.open(destination / "a.png") as image:
        assert np.asarray(image).min() > 200  # a.jpg's, not overwritten by the dark a.png
