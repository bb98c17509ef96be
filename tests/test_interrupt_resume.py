"""Interruption (SIGINT mid-run) and exact resumption from checkpoints."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY_BACKBONE
from texsynth import TextureSynthesis
from texsynth.api import fit
from texsynth.errors import CheckpointError, InvalidArgumentError

RUN = ["synthesize", "cells", "--exemplar-size", "32", "--backbone", "random_pyramid", "--max-iter", "4",
       "--seed", "1", "--no-log", "--no-progress", "--json"]


def _cli(tmp_path, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "texsynth", *RUN, "-o", str(tmp_path / name), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def test_sigint_saves_image_and_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path):
    steps = "16"
    reference = _cli(tmp_path, "straight.png", "--steps", steps)
    interrupted = _cli(tmp_path, "resumed.png", "--steps", steps, "--checkpoint-every", "1")
    checkpoint = tmp_path / "resumed.ckpt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and interrupted.poll() is None:
        time.sleep(0.05)
    assert checkpoint.exists(), interrupted.communicate()[1]
    interrupted.send_signal(signal.SIGINT)
    out, err = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 130, err
    assert "Traceback" not in err and "interrupted by SIGINT" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] == "SIGINT" and 1 <= summary["steps"] < 16
    assert (tmp_path / "resumed.png").stat().st_size > 0  # a valid PNG of the last step

    resumed = _cli(tmp_path, "resumed.png", "--steps", steps, "--resume", str(checkpoint))
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == 16
    reference.communicate(timeout=180)
    assert reference.returncode == 0
    assert (tmp_path / "resumed.png").read_bytes() == (tmp_path / "straight.png").read_bytes()


@pytest.mark.parametrize("losses", [
    None,
    # random directions: the draws after the checkpoint are the uninterrupted run's
    *({"sliced_wasserstein": {"weight": 1, "resample": mode}} for mode in ("step", "evaluation", "never")),
])
def test_resume_in_python_reaches_the_same_image(exemplar, tmp_path, losses):
    def module() -> TextureSynthesis:
        return TextureSynthesis(exemplar, **TINY_BACKBONE, seed=2, lbfgs={"max_iter": 3}, losses=losses)

    straight = module()
    fit(straight, 5, logdir=False, progress_bar=False, quiet=True)
    first = module()
    checkpoint = tmp_path / "run.ckpt"
    fit(first, 2, logdir=False, progress_bar=False, quiet=True, checkpoint=checkpoint, checkpoint_every=2)
    second = module()
    fit(second, 5, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)
    assert second.num_steps == 5 and len(second.loss_history) == 5
    assert second.loss_history[:2] == first.loss_history
    assert torch.equal(second.image.detach(), straight.image.detach())


def test_resuming_a_checkpoint_that_has_the_steps_already_says_so(exemplar, tmp_path, caplog):
    checkpoint = tmp_path / "run.ckpt"
    first = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=2, lbfgs={"max_iter": 3})
    fit(first, 3, logdir=False, progress_bar=False, quiet=True, checkpoint=checkpoint, checkpoint_every=3)
    again = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=2, lbfgs={"max_iter": 3})
    logging.getLogger("texsynth").addHandler(caplog.handler)  # texsynth's logger does not propagate
    try:
        fit(again, 2, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)
    finally:
        logging.getLogger("texsynth").removeHandler(caplog.handler)
    assert "run.ckpt has done 3 steps already, not fewer than the 2 asked for" in caplog.text
    assert again.num_steps == 3 and torch.equal(again.image.detach(), first.image.detach())


def test_a_checkpoint_of_other_settings_is_refused(exemplar, tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    fit(TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0), 1, logdir=False, progress_bar=False, quiet=True,
        checkpoint=checkpoint, checkpoint_every=1)
    other = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, size=24)
    with pytest.raises(InvalidArgumentError, match="checkpoint is for different settings: size"):
        fit(other, 3, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)
    # any option a loss was built with counts, not only the few attributes every loss has
    other_loss = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, losses={"spectrum": {"reduction": "sum"}})
    with pytest.raises(InvalidArgumentError, match="different settings: loss 'spectrum' reduction was 'mean', "
                                                   "now 'sum'"):
        fit(other_loss, 3, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"nope")
    with pytest.raises(InvalidArgumentError, match="garbage.ckpt"):
        fit(other, 3, logdir=False, progress_bar=False, quiet=True, resume=garbage)


def test_a_checkpoint_of_a_crop_from_a_tile_of_another_size_is_refused(exemplar, tmp_path):
    """texsynth cut such outputs from a multiple of the exemplar's size before it looked for the
    period: 64x64 here, where it is 48x56 now. Loading that image would fail on its shape."""
    checkpoint = tmp_path / "run.ckpt"
    fit(TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, size=(41, 50)), 1, logdir=False, progress_bar=False,
        quiet=True, checkpoint=checkpoint, checkpoint_every=1)
    older = torch.load(checkpoint, weights_only=False)
    assert older["texsynth"]["settings"]["image_size"] == [48, 56]
    older["texsynth"]["settings"]["image_size"] = [64, 64]
    torch.save(older, checkpoint)
    again = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, size=(41, 50))
    with pytest.raises(InvalidArgumentError, match=r"different settings: image_size was \[64, 64\], now \[48, 56\]"):
        fit(again, 2, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)


def test_a_loss_object_is_compared_by_its_options_and_older_records_by_theirs(exemplar, tmp_path):
    from texsynth.losses import GramLoss, SpectrumLoss

    def module(**gram):
        return TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, losses=[GramLoss(**gram), SpectrumLoss()])

    checkpoint = tmp_path / "run.ckpt"
    fit(module(), 1, logdir=False, progress_bar=False, quiet=True, checkpoint=checkpoint, checkpoint_every=1)
    with pytest.raises(CheckpointError, match=r"different settings: loss 'gram' layer_weights was \{"):
        fit(module(layer_weights=2.0), 2, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)
    resumed = module()
    fit(resumed, 2, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)
    assert resumed.num_steps == 2
    # a checkpoint whose loss objects were recorded with fewer attributes (texsynth before
    # layer_weights was one of them) is compared on those it has
    saved = torch.load(checkpoint, weights_only=False)
    del saved["texsynth"]["settings"]["losses"]["gram"]["layer_weights"]
    older = tmp_path / "older.ckpt"
    torch.save(saved, older)
    fit(module(layer_weights=2.0), 2, logdir=False, progress_bar=False, quiet=True, resume=older)


def test_a_plugin_loss_object_is_compared_by_the_options_its_class_names(exemplar, tmp_path):
    from texsynth.losses import TextureLoss

    class Brightness(TextureLoss):  # no built-in loss has a `level`
        option_attributes = ("level",)

        def __init__(self, level: float) -> None:
            super().__init__()
            self.level = level

        def set_target(self, exemplar, features, output_size):
            pass

        def forward(self, image, features):
            return (image.mean() - self.level).pow(2)

    def module(level):
        return TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, losses=["gram", Brightness(level)])

    checkpoint = tmp_path / "run.ckpt"
    fit(module(0.5), 1, logdir=False, progress_bar=False, quiet=True, checkpoint=checkpoint, checkpoint_every=1)
    with pytest.raises(CheckpointError, match="different settings: loss 'brightness' level was 0.5, now 0.25"):
        fit(module(0.25), 2, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)
    resumed = module(0.5)
    fit(resumed, 2, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)
    assert resumed.num_steps == 2


def test_a_file_that_is_no_texsynth_checkpoint_gets_a_one_line_reason(exemplar, tmp_path):
    """Lightning's own errors for these were a TypeError traceback (a saved list), a bare
    KeyError, or torch's multi-line advice to load the file unsafely."""
    checkpoint = tmp_path / "run.ckpt"
    fit(TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0), 1, logdir=False, progress_bar=False, quiet=True,
        checkpoint=checkpoint, checkpoint_every=1)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    torch.save([1, 2], tmp_path / "list.ckpt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state_dict.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "text.ckpt").write_text("hello")
    expected = {"truncated.ckpt": "corrupt or truncated", "list.ckpt": "not a texsynth checkpoint",
                "state_dict.ckpt": "not a texsynth checkpoint", "empty.ckpt": "the file is empty",
                "text.ckpt": "not a file written by torch.save", "missing.ckpt": "no such checkpoint file"}
    for name, reason in expected.items():
        module = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0)
        with pytest.raises(CheckpointError, match=reason) as raised:
            fit(module, 3, logdir=False, progress_bar=False, quiet=True, resume=tmp_path / name)
        message = str(raised.value)
        assert message.startswith(f"--resume {tmp_path / name}:") and "\n" not in message
        assert module.num_steps == 0  # refused before any step


def test_a_checkpoint_without_a_losss_saved_state_names_the_missing_key(exemplar, tmp_path):
    """Written before sliced_wasserstein saved its generator: the reason was only "Error(s) in
    loading state_dict for TextureSynthesis:", the first of torch's lines."""
    def module() -> TextureSynthesis:
        return TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, losses={"sliced_wasserstein": 1})

    checkpoint = tmp_path / "run.ckpt"
    fit(module(), 1, logdir=False, progress_bar=False, quiet=True, checkpoint=checkpoint, checkpoint_every=1)
    saved = torch.load(checkpoint, weights_only=False)
    del saved["state_dict"]["loss_terms.sliced_wasserstein._extra_state"]
    torch.save(saved, checkpoint)
    with pytest.raises(CheckpointError, match="Missing key.*sliced_wasserstein") as raised:
        fit(module(), 2, logdir=False, progress_bar=False, quiet=True, resume=checkpoint)
    assert "\n" not in str(raised.value)
    with pytest.raises(CheckpointError, match="Missing key.*sliced_wasserstein") as raised:
        TextureSynthesis.load_from_checkpoint(checkpoint)  # was torch's multi-line RuntimeError
    assert "\n" not in str(raised.value)


def test_sigterm_stops_at_the_end_of_the_step_with_image_and_checkpoint(exemplar, tmp_path):
    import lightning as L

    class SendSigterm(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of step 3

    module = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, lbfgs={"max_iter": 3})
    checkpoint, image = tmp_path / "run.ckpt", tmp_path / "run.png"
    previous = signal.getsignal(signal.SIGTERM)
    fit(module, 10, logdir=False, progress_bar=False, quiet=True, checkpoint=checkpoint, image_path=image,
        callbacks=[SendSigterm()])
    assert module.interrupted == "SIGTERM" and module.num_steps == 3
    assert checkpoint.exists() and image.exists()
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored


def test_load_from_checkpoint_rebuilds_the_module_from_the_file_alone(exemplar, tmp_path):
    """Lightning's own load_from_checkpoint called __init__ with the logged summary and failed
    ("rgb: no such file"): the exemplar and the settings to build the module are now stored."""
    from texsynth.image_io import save_image

    checkpoint, exemplar_file = tmp_path / "run.ckpt", tmp_path / "bricks.png"
    save_image(exemplar, exemplar_file)
    first = TextureSynthesis(exemplar_file, **TINY_BACKBONE, seed=3, size=24, lbfgs={"max_iter": 3},
                             losses={"spectrum": {"weight": 0.5}})
    fit(first, 2, logdir=False, progress_bar=False, quiet=True, checkpoint=checkpoint, checkpoint_every=2)

    loaded = TextureSynthesis.load_from_checkpoint(checkpoint)
    assert torch.equal(loaded.image.detach(), first.image.detach())
    assert torch.equal(loaded.exemplar, first.exemplar)
    assert loaded.describe() == first.describe() and loaded.num_steps == 2
    assert loaded.exemplar_name == "bricks" and loaded.hparams == first.hparams
    with pytest.raises(InvalidArgumentError, match="is the exemplar itself"):  # still protected
        loaded.save_outputs(exemplar_file)
    assert loaded.compute_losses()["total"].item() == pytest.approx(first.compute_losses()["total"].item())
    undone = TextureSynthesis.load_from_checkpoint(checkpoint)
    undone.undo_step()  # goes back to the loaded image, the last good one it has, not to its start noise
    assert torch.equal(undone.image.detach(), first.image.detach()) and undone.num_steps == 1
    fit(loaded, 1, logdir=False, progress_bar=False, quiet=True)  # a fresh fit goes on from the loaded image
    assert loaded.num_steps == 3 and loaded.loss_history[-1] < first.loss_history[-1]

    other_exemplar = exemplar.flip(-1)
    with pytest.raises(CheckpointError, match="different settings: exemplar_sha256_16"):
        TextureSynthesis.load_from_checkpoint(checkpoint, exemplar=other_exemplar)
    with pytest.raises(CheckpointError, match=r"^checkpoint .*missing.ckpt: no such checkpoint file$"):
        TextureSynthesis.load_from_checkpoint(tmp_path / "missing.ckpt")


def test_load_from_checkpoint_of_a_backbone_object_asks_for_it(exemplar, tmp_path):
    from texsynth.backbones import create_backbone

    def backbone():
        return create_backbone(TINY_BACKBONE["backbone"], **TINY_BACKBONE["backbone_options"])

    checkpoint = tmp_path / "run.ckpt"
    first = TextureSynthesis(exemplar, backbone=backbone(), seed=0, lbfgs={"max_iter": 2})
    fit(first, 1, logdir=False, progress_bar=False, quiet=True, checkpoint=checkpoint, checkpoint_every=1)
    with pytest.raises(CheckpointError, match="cannot rebuild its module \\(its backbone was given as a module\\); "
                                              "pass backbone= to load_from_checkpoint"):
        TextureSynthesis.load_from_checkpoint(checkpoint)
    loaded = TextureSynthesis.load_from_checkpoint(checkpoint, backbone=backbone())
    assert torch.equal(loaded.image.detach(), first.image.detach())


def test_ctrl_c_with_nothing_to_save_is_a_keyboard_interrupt_not_lightnings_exit(exemplar):
    """A coarse stage has no checkpoint, so Lightning handled Ctrl-C itself: it set SIGINT to
    be ignored for the rest of the process and called sys.exit(1) (the CLI then exited 1,
    silently). The caller now gets the KeyboardInterrupt, with SIGINT's handler put back."""
    import lightning as L

    class CtrlC(L.Callback):
        def on_train_batch_end(self, *args):
            raise KeyboardInterrupt

    module = TextureSynthesis(exemplar, **TINY_BACKBONE, seed=0, lbfgs={"max_iter": 2})
    # Python's own handler, also where pytest was started in the background (SIGINT ignored)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(module, 3, logdir=False, progress_bar=False, quiet=True, callbacks=[CtrlC()])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert module.num_steps == 1
