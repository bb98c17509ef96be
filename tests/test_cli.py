from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import NEEDS_NO_GPU
from texsynth.cli import main
from texsynth.image_io import save_image

TINY = ["--backbone", "random_pyramid", "--no-progress"]


@pytest.fixture
def exemplar_png(tmp_path, exemplar):
    path = tmp_path / "tex.png"
    save_image(exemplar, path)
    return path


def test_synthesize_writes_png_json_and_tensorboard_events(exemplar_png, tmp_path, capsys):
    out = tmp_path / "out" / "result.png"
    logdir = tmp_path / "logs"
    code = main(["synthesize", str(exemplar_png), "-o", str(out), "--steps", "2", "--size", "24",
                 "--max-iter", "3", "--backbone", "random_pyramid", "--seed", "5", "--logdir", str(logdir),
                 "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == str(out) and summary["steps"] == 2 and summary["evals"] >= 2
    assert summary["seconds"] > 0 and summary["backbone"] == "random_pyramid" and summary["seed"] == 5
    assert set(summary["loss"]) == {"gram", "spectrum", "chroma_spectrum", "value_range", "total"}
    with Image.open(out) as image:
        assert image.size == (24, 24)
    assert list(logdir.rglob("events.out.tfevents.*"))


def test_user_plugin_via_import_is_used_by_name(exemplar_png, tmp_path, monkeypatch, capsys):
    plugin = tmp_path / "my_plugin_losses.py"
    plugin.write_text(textwrap.dedent("""
        from texsynth.losses import TextureLoss, register_loss

        @register_loss("brightness")
        class Brightness(TextureLoss):
            def set_target(self, exemplar, features, output_size):
                self.register_buffer("target", exemplar.mean(), persistent=False)

            def forward(self, image, features):
                return (image.mean() - self.target) ** 2
    """))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "plugged.png"
    code = main(["synthesize", str(exemplar_png), "-o", str(out), "--steps", "1", "--max-iter", "2",
                 "--import", "my_plugin_losses", "--loss", "brightness=5", "--json", "--no-log", *TINY])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["loss"]) == {"gram", "spectrum", "chroma_spectrum", "value_range", "brightness", "total"}
    from texsynth.losses import LOSSES

    LOSSES.remove("brightness")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["missing.png"], "missing.png: no such file"),
        (["{ex}", "--steps", "0"], "--steps must be a positive integer"),
        (["{ex}", "--size", "-4"], "size must be"),
        (["{ex}", "--size", "abc"], "size must be N or WIDTHxHEIGHT"),
        (["{ex}", "--loss", "gram"], "expected NAME=WEIGHT"),
        (["{ex}", "--loss", "gram=nan"], "finite"),
        (["{ex}", "--loss", "nope=1"], "unknown loss 'nope'"),
        (["{ex}", "--backbone", "nope"], "unknown backbone 'nope'"),
        (["{ex}", "--preset", "nope"], "unknown preset 'nope'"),
        (["{ex}", "--import", "no_such_module_xyz"], "--import no_such_module_xyz"),
        (["{empty}"], "file is empty"),
        (["{text}"], "not an image"),
        (["{ex}", "--precision", "fp8"], "precision 'fp8'"),
        pytest.param(["{ex}", "--accelerator", "gpu"], "accelerator 'gpu'", marks=NEEDS_NO_GPU),
    ],
)
def test_bad_input_exits_2_with_one_line(args, fragment, exemplar_png, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    out = tmp_path / "never.png"
    argv = [a.format(ex=exemplar_png, empty=empty, text=text) for a in args]
    code = main(["synthesize", *TINY, "--steps", "1", "--max-iter", "2", *argv, "-o", str(out), "--no-log"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert fragment in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_an_output_that_is_a_folder_is_refused_in_one_line(exemplar_png, tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    assert main(["synthesize", str(exemplar_png), "-o", str(folder), "--no-log", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "--output" in err and "is a folder, not a file name" in err and len(err.splitlines()) == 1
    assert list(folder.iterdir()) == []


def test_a_logdir_that_is_a_file_is_refused_before_the_run(exemplar_png, tmp_path, capsys):
    in_the_way = tmp_path / "logs"
    in_the_way.write_text("a file")
    out = tmp_path / "out.png"
    assert main(["synthesize", str(exemplar_png), "-o", str(out), "--logdir", str(in_the_way), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "logdir" in err and "logs is a file, not a folder" in err and len(err.splitlines()) == 1
    assert not out.exists() and in_the_way.read_text() == "a file"


def test_logdir_true_means_the_default_folder(tmp_path, monkeypatch):
    from texsynth.trainer import DEFAULT_LOGDIR, make_trainer

    monkeypatch.chdir(tmp_path)
    trainer = make_trainer(1, logdir=True, run_name="wall", accelerator="cpu", progress_bar=False)
    assert trainer.logger is not None and trainer.logger.save_dir == DEFAULT_LOGDIR
    assert not (tmp_path / "True").exists()


def test_refuses_to_overwrite_the_exemplar(exemplar_png, capsys):
    before = exemplar_png.read_bytes()
    assert main(["synthesize", str(exemplar_png), "-o", str(exemplar_png), "--no-log", *TINY]) == 2
    assert "exemplar itself" in capsys.readouterr().err
    assert exemplar_png.read_bytes() == before


def test_console_entry_point_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "texsynth", "synthesize", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"texsynth: error: {tmp_path / 'nope.png'}: no such file (bundled examples: bricks, cells, cracks, weave)"
    ]


def test_list_and_example_commands(tmp_path, capsys):
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "gram" in listing and "vgg19" in listing and "liu2016" in listing and "cracks" in listing
    out = tmp_path / "weave.png"
    assert main(["example", "weave", "-o", str(out), "--size", "64"]) == 0
    with Image.open(out) as image:
        assert image.size == (64, 64)


@pytest.mark.parametrize("kind", ["directory", "truncated", "too_small", "nan_weight"])
def test_more_bad_inputs_exit_2_without_output(kind, tmp_path, capsys):
    import io

    import numpy as np

    out = tmp_path / "never.png"
    extra: list[str] = []
    if kind == "directory":
        exemplar = tmp_path / "folder"
        exemplar.mkdir()
        fragment = "is a directory"
    elif kind == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
        exemplar = tmp_path / "cut.png"
        exemplar.write_bytes(buffer.getvalue()[:300])
        fragment = "cut.png"
    elif kind == "too_small":
        exemplar = tmp_path / "tiny.png"
        Image.new("RGB", (8, 8), "red").save(exemplar)
        extra = ["--backbone", "vgg19", "--weights", "random"]
        fragment = "at least 16 pixels"
    else:
        exemplar = tmp_path / "ok.png"
        Image.new("RGB", (16, 16), "red").save(exemplar)
        extra = ["--loss", "gram=nan"]
        fragment = "finite"
    code = main(["synthesize", str(exemplar), "-o", str(out), "--no-log", "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0]
    assert not out.exists()


@pytest.mark.parametrize("errno_code", ["ENOSPC", "EROFS"])
@pytest.mark.parametrize("fails", ["from the start", "by the end"])
def test_full_or_read_only_disk_is_a_clear_error_and_keeps_earlier_results(tmp_path, capsys, monkeypatch, errno_code,
                                                                          fails):
    import errno
    import tempfile

    import texsynth.api

    earlier = tmp_path / "out.png"
    earlier.write_bytes(b"earlier result")
    code_number = getattr(errno, errno_code)
    real_mkstemp, real_fit, fitted = tempfile.mkstemp, texsynth.api.fit, []

    def failing_mkstemp(*args, prefix=None, **kwargs):
        if fails == "by the end" and prefix and prefix.startswith(".texsynth-probe"):
            return real_mkstemp(*args, prefix=prefix, **kwargs)  # the disk was fine when the run began
        raise OSError(code_number, os.strerror(code_number))

    monkeypatch.setattr("texsynth.image_io.tempfile.mkstemp", failing_mkstemp)
    monkeypatch.setattr("texsynth.api.fit", lambda *args, **kwargs: fitted.append(1) or real_fit(*args, **kwargs))
    code = main(["synthesize", "weave", "--exemplar-size", "32", "-o", str(earlier), "--steps", "1",
                 "--max-iter", "2", "--no-log", "--no-progress", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(earlier) in err[0] and os.strerror(code_number) in err[0]
    if fails == "from the start":  # found before any optimization, not after it
        assert "cannot write to folder" in err[0] and not fitted
    else:
        assert "cannot write output" in err[0] and fitted
    assert earlier.read_bytes() == b"earlier result"


def test_an_output_suffix_no_image_takes_fails_before_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("texsynth.api.fit", lambda *args, **kwargs: pytest.fail("optimized before failing"))
    out = tmp_path / "texture.pgn"
    assert main(["synthesize", "weave", "--exemplar-size", "32", "-o", str(out), "--steps", "1", "--no-log",
                 *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out}: cannot write '.pgn' images" in err[0] and ".png" in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("blocker", ["a file where a folder should be", "a missing folder under a file"])
def test_an_output_folder_that_cannot_exist_fails_before_the_run(tmp_path, capsys, monkeypatch, blocker):
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "o.png" if blocker.startswith("a file") else tmp_path / "afile" / "sub" / "o.png"
    monkeypatch.setattr("texsynth.api.fit", lambda *args, **kwargs: pytest.fail("optimized before failing"))
    assert main(["synthesize", "weave", "--exemplar-size", "32", "-o", str(out), "--steps", "1", "--no-log",
                 *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0]
    assert ("is a file, not a folder" if blocker.startswith("a file") else "Not a directory") in err[0]
    assert (tmp_path / "afile").read_text() == "not a folder"


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=20))
def test_loss_option_parsing_never_crashes(text):
    from texsynth.errors import InvalidArgumentError
    from texsynth.recipe import parse_loss_argument

    try:
        name, options = parse_loss_argument(text)
    except InvalidArgumentError as error:
        assert "--loss" in str(error)
    else:
        assert name and len(options) == 1
        weight = options.get("weight", 0.0)
        assert weight >= 0 and weight == weight
