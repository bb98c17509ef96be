"""``texsynth batch``: work items, the manifest, re-runs, and two CPU processes (gloo)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from conftest import NEEDS_NO_GPU, TINY_BACKBONE
from texsynth.batching import (
    BatchProgress,
    batch,
    find_exemplars,
    output_name,
    split_items,
    work_items,
)
from texsynth.errors import InvalidArgumentError, TexsynthError
from texsynth.examples import load_example
from texsynth.image_io import save_image
from texsynth.losses import GramLoss
from texsynth.manifest import Manifest

TINY = {**TINY_BACKBONE, "size": 24, "lbfgs": {"max_iter": 2}}


def _source(folder, names=("bricks", "weave", "cells"), corrupt: bool = True):
    """A folder of small exemplars (one in a subfolder), a corrupt PNG and a non-image file."""
    for index, name in enumerate(names):
        target = folder / ("sub" if index == 2 else "") / f"{name}.png"
        save_image(load_example(name, size=32)[0], target)
    if corrupt:
        (folder / "corrupt.png").write_bytes(b"not a png at all")
    (folder / "notes.txt").write_text("ignored")
    return folder


def _run(src, out, **options):
    return batch(src, out, accelerator="cpu", progress=False, **{**TINY, "steps": 1, **options})


@given(st.integers(0, 40), st.integers(1, 6))
def test_split_is_disjoint_and_covers_every_item(count, world_size):
    items = work_items([f"{i:03d}.png" for i in range(count)], 1)
    shares = [split_items(items, rank, world_size) for rank in range(world_size)]
    flat = [item for share in shares for item in share]
    assert sorted(flat, key=lambda item: item.key) == items
    assert len(set(flat)) == len(flat)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_exemplars_are_found_recursively_and_outputs_named_per_variation(tmp_path):
    src = _source(tmp_path / "src")
    (src / "out").mkdir()
    save_image(load_example("bricks", size=32)[0], src / "out" / "old_result.png")
    assert find_exemplars(src, exclude=src / "out") == ["bricks.png", "corrupt.png", "sub/cells.png", "weave.png"]
    assert output_name("sub/cells.jpg", 0, 1) == "sub/cells.png"
    assert output_name("sub/cells.jpg", 2, 3) == "sub/cells_2.png"
    with pytest.raises(InvalidArgumentError, match="SRC .*no such directory"):
        find_exemplars(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="no image files"):
        find_exemplars(tmp_path / "empty")


def test_two_exemplars_that_would_share_an_output_are_refused_before_any_item(tmp_path, capsys):
    from texsynth.cli import main

    src = _source(tmp_path / "SRC", names=("bricks",), corrupt=False)
    save_image(load_example("weave", size=32)[0], src / "Bricks.jpg")  # -> Bricks.png: bricks.png on macOS
    assert main(["batch", str(src), str(tmp_path / "OUT"), "--size", "24", "--steps", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert "Bricks.jpg and bricks.png would both be written to bricks.png" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "OUT").exists()
    assert [item.output for item in work_items(["a.jpg", "a_1.png"], 2)] == ["a_0.png", "a_1.png",
                                                                             "a_1_0.png", "a_1_1.png"]


def test_a_logdir_that_is_a_file_is_refused_before_any_item(tmp_path):
    src = _source(tmp_path / "SRC", names=("bricks",), corrupt=False)
    (tmp_path / "logs").write_text("a file")
    with pytest.raises(TexsynthError, match="logdir: .*logs is a file, not a folder"):
        _run(src, tmp_path / "OUT", logdir=tmp_path / "logs")
    assert not (tmp_path / "OUT").exists()


def _append_many(path, writer: int, count: int) -> None:
    manifest = Manifest(path)
    for index in range(count):
        manifest.append({"exemplar": f"w{writer}/{index}.png", "variation": 0, "status": "done",
                         "padding": "x" * 3000})  # lines longer than a pipe buffer


@pytest.mark.skipif(not hasattr(os, "fork"), reason="uses fork to start writers quickly")
def test_manifest_lines_from_concurrent_processes_never_interleave(tmp_path):
    path = tmp_path / "manifest.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(path, writer, 40)) for writer in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join()
    assert all(process.exitcode == 0 for process in writers)
    lines = path.read_text().splitlines()
    assert len(lines) == 160
    assert len({json.loads(line)["exemplar"] for line in lines}) == 160


def test_manifest_skips_a_torn_line_latest_record_wins_and_compacts(tmp_path):
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"exemplar": "a.png", "variation": 0, "status": "failed"})
    manifest.append({"exemplar": "b.png", "variation": 0, "status": "done"})
    manifest.append({"exemplar": "a.png", "variation": 0, "status": "done"})
    with open(manifest.path, "a") as stream:
        stream.write('{"exemplar": "c.png", "varia')  # a crash in the middle of a write
    assert {key: record["status"] for key, record in manifest.latest().items()} == {
        ("a.png", 0): "done", ("b.png", 0): "done"}
    manifest.compact([("b.png", 0), ("a.png", 0)])
    assert [json.loads(line)["exemplar"] for line in manifest.path.read_text().splitlines()] == ["b.png", "a.png"]


def test_batch_records_every_item_keeps_going_past_a_corrupt_file_and_reruns_only_missing(tmp_path):
    src, out = _source(tmp_path / "src"), tmp_path / "out"
    first = _run(src, out)
    assert (first.total, first.to_do, first.done, first.failed, first.processed_here) == (4, 4, 3, 1, 4)
    assert "corrupt.png" in first.failures[0]["error"] and "not an image" in first.failures[0]["error"]
    for name in ("bricks.png", "weave.png", "sub/cells.png"):
        with Image.open(out / name) as image:
            assert image.size == (24, 24)
    records = Manifest(out / "manifest.jsonl").records()
    assert [(r["exemplar"], r["status"]) for r in records] == [
        ("bricks.png", "done"), ("corrupt.png", "failed"), ("sub/cells.png", "done"), ("weave.png", "done")]
    done = next(r for r in records if r["exemplar"] == "bricks.png")
    assert done["steps"] == 1 and done["evals"] >= 1 and set(done["losses"]) >= {"total"} and done["rank"] == 0

    mtimes = {name: (out / name).stat().st_mtime_ns for name in ("bricks.png", "weave.png", "sub/cells.png")}
    (src / "corrupt.png").unlink()  # the user removes the bad file; it is no longer an item
    again = _run(src, out)
    assert (again.total, again.to_do, again.processed_here, again.done) == (3, 0, 0, 3)
    assert {name: (out / name).stat().st_mtime_ns for name in mtimes} == mtimes

    (out / "weave.png").unlink()
    third = _run(src, out)
    assert (third.to_do, third.processed_here, third.done) == (1, 1, 3)
    assert (out / "weave.png").is_file()
    assert (out / "bricks.png").stat().st_mtime_ns == mtimes["bricks.png"]


def test_a_rerun_with_other_settings_is_refused_instead_of_calling_old_results_its_own(tmp_path):
    """A re-run into the same OUT with a new size used to report "all done" and keep the old
    24x24 images."""
    src, out = _source(tmp_path / "src", names=("bricks",), corrupt=False), tmp_path / "out"
    _run(src, out)
    manifest_before = (out / "manifest.jsonl").read_text()
    record = Manifest(out / "manifest.jsonl").latest()[("bricks.png", 0)]
    assert record["settings"]["size"] == [24, 24] and record["settings"]["steps"] == 1
    assert _run(src, out, size="24").to_do == 0  # the CLI's "24" is the same size as 24
    with pytest.raises(InvalidArgumentError, match=r"OUT .*out: holds results made with other settings "
                                                   r"\(size \[24, 24\] -> \[32, 32\], steps 1 -> 2\)"):
        _run(src, out, size=32, steps=2)
    assert (out / "manifest.jsonl").read_text() == manifest_before
    with Image.open(out / "bricks.png") as image:
        assert image.size == (24, 24)


def test_a_rerun_with_a_loss_object_of_other_options_is_refused_too(tmp_path):
    """Loss objects were recorded by type name only: GramLoss on other layers was "all done"."""
    src, out = _source(tmp_path / "src", names=("bricks",), corrupt=False), tmp_path / "out"
    _run(src, out, losses=[GramLoss(layers=["relu3"])])
    assert _run(src, out, losses=[GramLoss(layers=["relu3"])]).to_do == 0  # a new object, the same loss
    with pytest.raises(InvalidArgumentError, match=r"holds results made with other settings \(losses "):
        _run(src, out, losses=[GramLoss(layers=["relu5"])])
    # a manifest written when loss objects were recorded by type name still counts as this run's
    manifest = out / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for record in records:
        record["settings"]["losses"] = ["GramLoss"]
    manifest.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert _run(src, out, losses=[GramLoss(layers=["relu3"])]).to_do == 0


def test_variations_are_separate_items_with_their_own_seeds(tmp_path):
    src, out = _source(tmp_path / "src", names=("bricks",), corrupt=False), tmp_path / "out"
    result = _run(src, out, variations=2, seed=5)
    assert (result.total, result.done) == (2, 2)
    seeds = {r["output"]: r["seed"] for r in Manifest(out / "manifest.jsonl").records()}
    assert seeds == {"bricks_0.png": 5, "bricks_1.png": 6}
    assert (out / "bricks_0.png").read_bytes() != (out / "bricks_1.png").read_bytes()


def test_progress_line_counts_the_whole_batch(tmp_path):
    manifest = Manifest(tmp_path / "manifest.jsonl")
    items = work_items(["a.png", "b.png", "c.png", "d.png"], 1)
    progress = BatchProgress(manifest, items, already_done=1)
    manifest.append({"exemplar": "a.png", "variation": 0, "status": "done"})
    manifest.append({"exemplar": "b.png", "variation": 0, "status": "done"})
    manifest.append({"exemplar": "c.png", "variation": 0, "status": "failed"})
    line = progress.line(*progress.counts())
    assert line.startswith("batch: 2/4 done, 1 failed") and "items/h" in line and "ETA" in line


@pytest.mark.parametrize("args, fragment", [
    (["SRC_MISSING", "OUT"], "no such directory"),
    (["SRC", "SRC"], "is SRC"),
    (["SRC", "OUT", "--devices", "0"], "--devices must be a positive integer"),
    (["SRC", "OUT", "--variations", "0"], "--variations must be a positive integer"),
    (["SRC", "OUT", "--precision", "fp8"], "precision 'fp8'"),
    pytest.param(["SRC", "OUT", "--accelerator", "gpu"], "accelerator 'gpu'", marks=NEEDS_NO_GPU),
])
def test_batch_cli_bad_input_is_one_line_exit_2(args, fragment, tmp_path, capsys):
    from texsynth.cli import main

    src = _source(tmp_path / "SRC", names=("bricks",), corrupt=False)
    paths = {"SRC": str(src), "SRC_MISSING": str(tmp_path / "nope"), "OUT": str(tmp_path / "OUT")}
    assert main(["batch", *[paths.get(a, a) for a in args]]) == 2
    error = capsys.readouterr().err.strip()
    assert fragment in error and len(error.splitlines()) == 1
    assert not (tmp_path / "OUT").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 1.5}, "steps must be a positive integer, got 1.5"),
    ({"seed": -2}, "seed must be a non-negative integer, got -2"),
    ({"checkpoint_every": -1}, "checkpoint_every must be a non-negative integer"),
    ({"log_images_every": 0}, "log_images_every must be a positive integer"),
    ({"devices": 0}, "devices must be a positive integer"),
    ({"losses": {"bogus": 1.0}}, "unknown loss 'bogus'"),
    ({"weights": "no/such/vgg19.pth"}, "VGG19 weights file no/such/vgg19.pth: no such file"),
    ({"max_iter": 2}, r"batch\(\) got an unknown option 'max_iter'; L-BFGS settings go in lbfgs="),
    ({"progress_bar": True}, "unknown option 'progress_bar'; batch\\(\\) sets it for every item"),
    ({"stop_when_staled": 0.1}, "did you mean 'stop_when_stalled'"),
    ({"callbacks": ["not a callback"]}, "callbacks must be Lightning Callbacks, got str"),
])
def test_batch_refuses_bad_options_before_any_item(kwargs, message, tmp_path):
    """Such options used to fail every item, one by one (a float count passed the check)."""
    from texsynth import batch

    from texsynth import TexsynthError

    src = _source(tmp_path / "SRC", names=("bricks",), corrupt=False)
    with pytest.raises(TexsynthError, match=message):
        batch(src, tmp_path / "OUT", **kwargs)
    assert not (tmp_path / "OUT").exists()


def test_batch_into_an_out_folder_that_cannot_exist_fails_before_any_item(tmp_path, capsys):
    from texsynth.cli import main

    src = _source(tmp_path / "SRC", names=("bricks",), corrupt=False)
    (tmp_path / "afile").write_text("not a folder")
    assert main(["batch", str(src), str(tmp_path / "afile" / "OUT"), "--size", "24", "--steps", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "OUT" in error and "cannot write to folder" in error
    assert (tmp_path / "afile").read_text() == "not a folder"


def _cli_batch(src, out, config, *extra):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "texsynth", "batch", str(src), str(out), "--config", str(config),
               "--size", "24", "--steps", "1", "--max-iter", "2", "--accelerator", "cpu", "--devices", "2",
               "--json", *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)


def test_two_cpu_processes_split_the_items_and_a_rerun_after_a_crash_does_only_the_rest(tmp_path):
    src = _source(tmp_path / "src", names=("bricks", "weave", "cells", "cracks"))
    out = tmp_path / "out"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"backbone": TINY_BACKBONE["backbone"],
                                      "backbone_options": {"kernel_sizes": [3, 5], "filters": 8}}))
    first = _cli_batch(src, out, config)
    assert first.returncode == 1, first.stderr  # the corrupt file failed; the rest went on
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert (summary["total"], summary["done"], summary["failed"], summary["processes"]) == (5, 4, 1, 2)
    records = Manifest(out / "manifest.jsonl").records()
    assert sorted(r["exemplar"] for r in records) == sorted(find_exemplars(src))  # each item exactly once
    assert {r["rank"] for r in records} == {0, 1}  # both ranks worked
    assert all((out / r["output"]).is_file() for r in records if r["status"] == "done")

    # simulate a crash: the last two records never reached the manifest, one output is gone
    lines = (out / "manifest.jsonl").read_text().splitlines(keepends=True)
    lost = [json.loads(line) for line in lines if json.loads(line)["status"] == "done"][-2:]
    kept = [line for line in lines if json.loads(line) not in lost]
    (out / "manifest.jsonl").write_text("".join(kept) + lines[0][:20])
    missing = {r["exemplar"] for r in lost} | {"bricks.png"}
    (out / "bricks.png").unlink(missing_ok=True)
    untouched = {r["output"]: (out / r["output"]).stat().st_mtime_ns for r in records
                 if r["status"] == "done" and r["exemplar"] not in missing}

    second = _cli_batch(src, out, config)
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["to_do"] == len(missing) + 1  # the missing ones and the failed (corrupt) one
    assert (summary["done"], summary["failed"]) == (4, 1)
    assert {name: (out / name).stat().st_mtime_ns for name in untouched} == untouched
    final = Manifest(out / "manifest.jsonl").records()
    assert len(final) == 5 and {r["exemplar"] for r in final} == set(find_exemplars(src))


def test_a_preempted_item_is_checkpointed_and_the_next_run_resumes_it(tmp_path, monkeypatch):
    import signal

    from texsynth.checkpointing import SaveAndInterrupt

    src, out = _source(tmp_path / "src", names=("bricks", "weave"), corrupt=False), tmp_path / "out"
    original = SaveAndInterrupt.on_train_batch_end

    def sigterm_after_first_step(self, trainer, pl_module, *args):
        self.requested = signal.SIGTERM  # as if SLURM preempted the job during step 1
        original(self, trainer, pl_module, *args)

    monkeypatch.setattr(SaveAndInterrupt, "on_train_batch_end", sigterm_after_first_step)
    first = _run(src, out, steps=3)
    assert first.interrupted and first.processed_here == 1 and first.done == 0
    record = Manifest(out / "manifest.jsonl").latest()[("bricks.png", 0)]
    assert record["status"] == "interrupted" and record["steps"] == 1
    checkpoint = out / ".texsynth-checkpoints" / "bricks.png.ckpt"
    assert checkpoint.is_file() and not (out / "bricks.png").exists()

    monkeypatch.setattr(SaveAndInterrupt, "on_train_batch_end", original)
    second = _run(src, out, steps=3)
    assert (second.done, second.to_do, second.interrupted) == (2, 2, False)
    resumed = Manifest(out / "manifest.jsonl").latest()[("bricks.png", 0)]
    assert resumed["status"] == "done" and resumed["steps"] == 3
    assert not checkpoint.exists()


def test_per_item_tensorboard_logging_is_one_run_per_item(tmp_path):
    src, out = _source(tmp_path / "src", names=("bricks", "weave"), corrupt=False), tmp_path / "out"
    result = _run(src, out, logdir=tmp_path / "logs")
    assert result.done == 2
    runs = {path.parent.parent.name for path in (tmp_path / "logs").rglob("events.out.tfevents.*")}
    assert runs == {"bricks", "weave"}


def test_a_checkpoint_left_by_other_settings_is_discarded_and_the_item_starts_again(tmp_path, caplog):
    import logging

    src, out = _source(tmp_path / "src", names=("bricks",), corrupt=False), tmp_path / "out"
    stale = out / ".texsynth-checkpoints" / "bricks.png.ckpt"
    from texsynth import TextureSynthesis
    from texsynth.api import fit

    # an interrupted run's checkpoint, then the user changes --size before running the batch again
    module = TextureSynthesis(src / "bricks.png", **{k: v for k, v in TINY.items() if k != "size"}, size=16)
    fit(module, 1, logdir=False, progress_bar=False, quiet=True, checkpoint=stale, checkpoint_every=1)
    assert stale.is_file()
    logging.getLogger("texsynth").addHandler(caplog.handler)
    try:
        result = _run(src, out, steps=2)  # size 24, not 16: the checkpoint is for other settings
    finally:
        logging.getLogger("texsynth").removeHandler(caplog.handler)
    assert result.done == 1 and result.failed == 0
    record = Manifest(out / "manifest.jsonl").latest()[("bricks.png", 0)]
    assert record["status"] == "done" and record["steps"] == 2
    assert "ignoring its checkpoint (checkpoint is for different settings: size" in caplog.text
    assert not stale.exists()
