"""The benchmark scripts still run and print their tables (tiny sizes: numbers are not checked,
only that each script works end to end against the current package)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from texsynth.examples import load_example
from texsynth.image_io import save_image

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _bricks_folder(tmp_path: Path) -> Path:
    """A textures folder holding one small exemplar, ``bricks.png``, as the scripts expect."""
    textures = tmp_path / "textures"
    textures.mkdir()
    save_image(load_example("bricks", size=48), textures / "bricks.png")
    return textures


def test_speed_prints_the_floor_ratio():
    out = _run("speed.py", "--exemplar", "bricks", "--size", "32", "--recipe", "weight_free", "--repeats", "1",
               "--evals", "1")
    assert re.search(r"^floor \(bare forward\+backward\+loss\)\s+[\d.]+\s+[\d.]+\s+1\.000$", out, re.M)
    ratio = re.search(r"texsynth/floor per evaluation: ([\d.]+)", out)
    assert ratio and float(ratio.group(1)) > 0


def test_allocator_compares_both_settings():
    import pytest

    from texsynth.allocator import _glibc

    if _glibc() is None:
        pytest.skip("glibc's allocator only")
    out = _run("allocator.py", "--size", "32", "--repeats", "1", "--evals", "1")
    assert re.search(r"^\| glibc defaults \| [\d.]+ \| [\d.]+ \| [\d,]+ \|$", out, re.M)
    assert re.search(r"^\| freed memory kept \(opt-in\) \| [\d.]+ \|", out, re.M)
    assert re.search(r"^speed-up \(best\): [\d.]+x$", out, re.M)


def test_precision_prints_one_row_per_setting():
    out = _run("precision.py", "--sizes", "32", "--repeats", "1", "--evals", "1")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| weight_free | 32 |")]
    assert [row[2].strip() for row in rows] == ["fp32", "bf16-mixed", "matmul-medium"]
    assert rows[0][6].strip() == "1.00x" and float(rows[0][7]) == 0.0


def test_memory_prints_peak_growth_and_estimate():
    out = _run("memory.py", "--sizes", "32", "--evals", "1", "--options", '{"preset": "weight_free"}')
    row = out.strip().splitlines()[-1].split()
    assert row[0] == "32" and len(row) == 6
    peak, growth, estimate = map(float, row[1:4])
    assert peak >= growth > 0 and estimate > 0


def test_quality_speed_scores_both_recipes(tmp_path):
    textures = _bricks_folder(tmp_path)
    out = _run("quality_speed.py", "--textures", str(textures), "--size", "32", "--reference-steps", "2",
               "--steps", "1", "--every", "1", "--json", str(tmp_path / "qs.json"),
               "--reference-cache", str(tmp_path / "cache"))
    assert "texsynth: reached the reference recipe's final quality on" in out
    (row,) = json.loads((tmp_path / "qs.json").read_text())
    assert row["texture"] == "bricks"
    assert row["reference"]["evals"] > 0 and row["texsynth"]["evals"] > 0
    assert list((tmp_path / "cache").glob("bricks-32-weight_free-2-1-x100-*.json"))


def test_quality_speed_saves_the_reference_image_also_from_its_cache(tmp_path):
    from PIL import Image

    textures = _bricks_folder(tmp_path)
    common = ("--textures", str(textures), "--size", "32", "--reference-steps", "1", "--steps", "1",
              "--every", "1", "--reference-cache", str(tmp_path / "cache"))
    for run in ("first", "cached"):
        images = tmp_path / run
        _run("quality_speed.py", *common, "--save-images", str(images))
        saved = sorted(path.name for path in images.iterdir())
        assert saved == ["bricks-32-reference.png", "bricks-32-texsynth.png"], (run, saved)
        assert Image.open(images / "bricks-32-reference.png").size == (32, 32)
    first = Image.open(tmp_path / "first" / "bricks-32-reference.png").tobytes()
    assert Image.open(tmp_path / "cached" / "bricks-32-reference.png").tobytes() == first


def test_quality_speed_cache_is_keyed_by_the_recipe(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delenv("TEXSYNTH_KEEP_FREED_MEMORY", raising=False)
    import argparse

    import quality_speed

    args = argparse.Namespace(reference_cache=tmp_path, size=64, preset="weight_free", reference_steps=250,
                              every=5, reference_loss_scale=100.0, seed=0)
    options = quality_speed.reference_options("weight_free", 100.0)
    same = quality_speed.reference_cache_file("bricks", args, dict(options))
    assert same == quality_speed.reference_cache_file("bricks", args, options)
    changed = {**options, "losses": {**options["losses"], "chroma_spectrum": {"weight": 0.0}}}
    assert quality_speed.reference_cache_file("bricks", args, changed) != same
    assert same.parent == tmp_path and same.name.startswith("bricks-64-weight_free-250-5-x100-")
    args.seed = 1
    assert quality_speed.reference_cache_file("bricks", args, options).name.startswith(
        "bricks-64-weight_free-250-5-x100-seed1-")
    monkeypatch.setenv("TEXSYNTH_KEEP_FREED_MEMORY", "1")  # timed ~1.4x faster: a curve of its own
    assert quality_speed.reference_cache_file("bricks", args, options).name.startswith(
        "bricks-64-weight_free-250-5-x100-seed1-kept-")


def test_quality_runs_from_a_first_seed_and_quality_table_takes_the_median_over_seeds(tmp_path):
    textures = _bricks_folder(tmp_path)
    runs = []
    for seed in (0, 1, 2):
        runs.append(tmp_path / f"seed{seed}.json")
        _run("quality.py", "--textures", str(textures), "--reference", str(tmp_path / "none"), "--size", "32",
             "--steps", "1", "--seeds", "1", "--first-seed", str(seed), "--json", str(runs[-1]),
             "--sheet", str(tmp_path / f"sheet{seed}.png"))
    rows = [json.loads(path.read_text())[0] for path in runs]
    assert [row["seed"] for row in rows] == [0, 1, 2]
    assert rows[0]["swd"] != rows[1]["swd"]  # different seeds, different images

    out = _run("quality_table.py", "init=" + ",".join(map(str, runs)))
    (line,) = [line for line in out.splitlines() if line.startswith("| bricks | init |")]
    cells = [cell.strip() for cell in line.split("|")[1:-1]]
    assert cells[2] == "3"
    assert abs(float(cells[3]) - sorted(row["swd"] for row in rows)[1]) <= 5e-4  # the median, 3 decimals
    assert abs(float(cells[-1]) - max(row["swd"] for row in rows)) <= 5e-4


def test_quality_table_names_a_malformed_run():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "quality_table.py"), "sigmoid"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "expected LABEL=FILE" in done.stderr


def test_determinism_compares_two_same_seed_runs_per_setting():
    out = _run("determinism.py", "--sizes", "32", "--recipes", "weight_free", "--steps", "1")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| weight_free | 32 |")]
    assert [row[2].strip() for row in rows] == ["off", "on"]
    assert all(row[3].strip() == "True" for row in rows)  # CPU kernels are deterministic either way


def test_loss_cost_prints_one_row_per_feature_loss():
    out = _run("loss_cost.py", "--sizes", "24", "--repeats", "1", "--evals", "1")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "| 24 |" in line]
    assert [row[0].strip() for row in rows] == ["gram", "mean_covariance", "histogram", "sliced_wasserstein"]
    assert rows[0][4].strip() == "1.00x" and all(float(row[2]) > 0 for row in rows)
