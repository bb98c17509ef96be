from __future__ import annotations

import pytest
import torch
from PIL import Image

from conftest import TINY_BACKBONE
from texsynth import InvalidArgumentError, TexsynthError, TextureSynthesisCNN, synthesize
from texsynth.image_io import save_image


def test_synthesize_one_call(exemplar):
    result = synthesize(exemplar, steps=2, size=24, seed=1, **TINY_BACKBONE, losses={"spectrum": 0})
    assert result.image.shape == (3, 24, 24)
    assert 0 <= float(result.image.min()) and float(result.image.max()) <= 1
    assert result.steps == 2 and result.evals >= 2 and result.seconds > 0
    assert set(result.losses) == {"gram", "chroma_spectrum", "total"}


@pytest.mark.parametrize("option, hint", [
    ("max_iter", "L-BFGS settings go in lbfgs={'max_iter': ...}"),
    ("exemplar_sise", "did you mean 'exemplar_size'?"),
    ("zzz", "options: accelerator, backbone"),
])
def test_an_unknown_option_names_synthesize_and_a_fix(exemplar, option, hint):
    """It used to be TextureSynthesis.__init__'s TypeError, about a class the caller never called."""
    from texsynth.errors import UnknownOptionError

    with pytest.raises(UnknownOptionError) as caught:
        synthesize(exemplar, steps=1, **{option: 2})
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, TexsynthError)  # the CLI's one line
    assert str(caught.value).startswith(f"synthesize() got an unknown option {option!r}; {hint}")


def test_callbacks_may_be_one_callback_and_anything_else_is_refused_first(exemplar):
    """A single callback (as the Trainer takes it) was a TypeError about `*`; a string or a
    number failed at the Trainer's first hook, after the coarse stage."""
    import lightning as L

    class CountSteps(L.Callback):
        steps = 0

        def on_train_batch_end(self, *args):
            CountSteps.steps += 1

    result = synthesize(exemplar, steps=2, coarse_levels=0, callbacks=CountSteps(), **TINY_BACKBONE)
    assert result.steps == 2 and CountSteps.steps == 2
    for bad, message in (("x", "a Lightning Callback or a list of them, got str"), ([1], "got int")):
        with pytest.raises(InvalidArgumentError, match=message):
            synthesize(exemplar, steps=1, callbacks=bad, **TINY_BACKBONE)


@pytest.mark.parametrize("kwargs, message", [
    ({"image_path": 5}, "image_path must be a path (str or os.PathLike), got 5"),
    ({"checkpoint": 5}, "checkpoint must be a path"),
    ({"resume": 5}, "resume must be a path"),
    ({"logdir": 5}, "logdir must be a path"),
    ({"deterministic_on_gpu": "no"}, "deterministic_on_gpu must be True or False, got 'no'"),  # "no" is truthy
    ({"progress_bar": "yes"}, "progress_bar must be True or False"),
    ({"checkpointing": "yes"}, "checkpointing must be True, False or None"),
    ({"backbone": "vgg19", "backbone_options": None, "weights": 3}, "weights must be 'imagenet', 'random', a state-dict path or None, got 3"),
])
def test_options_of_the_wrong_type_are_one_line_errors(exemplar, kwargs, message):
    """Paths were os.fspath's TypeError (naming neither option nor value); "no" passed as true;
    checkpointing="yes" blamed the backbone."""
    with pytest.raises(InvalidArgumentError) as caught:
        synthesize(exemplar, steps=1, **{**TINY_BACKBONE, **kwargs})
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_synthesize_from_a_numpy_array(exemplar, dtype):
    """A (H, W, 3) array is an exemplar like any other (Lightning's hyper-parameter capture once
    compared it with ==, elementwise, and raised "truth value of an array is ambiguous")."""
    array = exemplar[0].permute(1, 2, 0).numpy()
    array = (array * 255).round().astype("uint8") if dtype == "uint8" else array.astype("float32")
    result = synthesize(array, steps=1, size=16, seed=0, coarse_levels=0, **TINY_BACKBONE)
    assert result.image.shape == (3, 16, 16)
    from_tensor = synthesize(exemplar, steps=1, size=16, seed=0, coarse_levels=0, **TINY_BACKBONE)
    tolerance = 0.05 if dtype == "uint8" else 1e-5  # uint8 rounds the exemplar
    assert (result.image - from_tensor.image).abs().mean() < tolerance


def test_seed_compatible_class_end_to_end(exemplar, tmp_path):
    path = tmp_path / "bricks_small.png"
    save_image(exemplar, path)
    synth = TextureSynthesisCNN(str(path), preset=None, progress_bar=False, seed=0, **TINY_BACKBONE)
    first_noise = synth.output_image.clone()
    assert synth.output_image.shape == (3, 32, 32)

    synth.synthesize_texture(num_epochs=2)
    assert len(synth.losses) == 2
    after_first = synth.output_image.clone()
    assert not torch.equal(after_first, first_noise)

    synth.optimize(num_epochs=2)  # continues: history grows, L-BFGS state kept
    assert len(synth.losses) == 4 and synth.losses[-1] <= synth.losses[1]

    synth.synthesize_texture(num_epochs=1)  # new noise: starts over from a higher loss
    assert synth.losses[-1] > synth.losses[3]

    out_dir = tmp_path / "results" / "nested"
    exemplar_png, synth_png = synth.save_textures(output_dir=out_dir)
    assert exemplar_png == out_dir / "exemplar_bricks_small.png"
    assert synth_png == out_dir / "synth_bricks_small.png"
    for png in (exemplar_png, synth_png):
        with Image.open(png) as image:
            assert image.size == (32, 32) and image.mode == "RGB"


def test_seed_compatible_class_names_num_epochs_and_keeps_the_image(exemplar):
    synth = TextureSynthesisCNN(exemplar, preset=None, progress_bar=False, seed=0, **TINY_BACKBONE)
    before = synth.output_image.clone()
    for bad in (0, -3, 2.5):
        with pytest.raises(InvalidArgumentError, match=r"num_epochs must be a positive integer"):
            synth.synthesize_texture(num_epochs=bad)
        with pytest.raises(InvalidArgumentError, match=r"num_epochs must be a positive integer"):
            synth.optimize(num_epochs=bad)
    assert torch.equal(synth.output_image, before)  # a refused call does not draw new noise


def test_seed_compatible_class_defaults_to_the_reference_recipe(no_network, torch_home):
    from texsynth.errors import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError, match="ImageNet VGG19"):
        TextureSynthesisCNN("cracks")


def test_no_output_overwrites_the_exemplar_file(exemplar, tmp_path):
    path = tmp_path / "wall.png"
    save_image(exemplar, path)
    original = path.read_bytes()
    options = dict(steps=1, size=16, seed=0, coarse_levels=0, **TINY_BACKBONE)
    with pytest.raises(InvalidArgumentError, match="wall.png is the exemplar itself"):
        synthesize(str(path), image_path=tmp_path / "." / "wall.png", **options)  # refused before the run
    result = synthesize(str(path), **options)
    with pytest.raises(InvalidArgumentError, match="exemplar itself"):
        result.save(path)
    assert path.read_bytes() == original
    variation_path = tmp_path / "brick_1.png"  # what variation 1 of "brick.png" would be called
    save_image(exemplar, variation_path)
    several = synthesize(str(variation_path), variations=2, **options)
    with pytest.raises(InvalidArgumentError, match="brick_1.png is the exemplar itself"):
        several.save(tmp_path / "brick.png")
    assert not (tmp_path / "brick_0.png").exists()  # nothing written when one target is refused
    assert [p.name for p in several.save(tmp_path / "other.png")] == ["other_0.png", "other_1.png"]


def test_a_checkpoint_is_kept_apart_from_the_exemplar_and_the_image(exemplar, tmp_path):
    path = tmp_path / "wall.png"
    save_image(exemplar, path)
    original = path.read_bytes()
    options = dict(steps=1, size=16, seed=0, coarse_levels=0, checkpoint_every=1, **TINY_BACKBONE)
    with pytest.raises(InvalidArgumentError, match="checkpoint .*wall.png is the exemplar itself"):
        synthesize(str(path), checkpoint=path, **options)
    assert path.read_bytes() == original
    with pytest.raises(InvalidArgumentError, match="checkpoint .*out_1.png is also the image output"):
        synthesize(str(path), checkpoint=tmp_path / "out_1.png", image_path=tmp_path / "out.png",
                   variations=2, **options)
    assert list(tmp_path.iterdir()) == [path]  # refused before the run: nothing written


@pytest.mark.parametrize("kwargs, message", [
    ({"checkpoint_every": -1}, "checkpoint_every must be a non-negative integer, got -1"),
    ({"checkpoint_every": 1.5}, "checkpoint_every must be a non-negative integer, got 1.5"),
    ({"log_images_every": 0}, "log_images_every must be a positive integer, got 0"),
    ({"checkpoint": "FOLDER"}, "is a folder, not a file name"),
    ({"image_path": "FOLDER"}, "is a folder, not a file name"),
    ({"devices": 2}, "devices 2: one synthesis runs on exactly one device"),
    ({"devices": [0, 1]}, r"devices \[0, 1\]: one synthesis runs on exactly one device"),
    ({"devices": "0,1"}, "devices '0,1': one synthesis"),
    ({"logdir": "FILE"}, "logdir: .* is a file, not a folder"),
])
def test_bad_run_options_fail_before_the_coarse_stages(exemplar, tmp_path, monkeypatch, kwargs, message):
    import texsynth.api

    def no_stage(*args, **kwargs):
        raise AssertionError("a coarse stage ran before the bad option was refused")

    monkeypatch.setattr(texsynth.api, "coarse_to_fine_start", no_stage)
    (tmp_path / "a_file").write_text("in the way")
    paths = {"FOLDER": tmp_path, "FILE": tmp_path / "a_file"}
    kwargs = {key: paths.get(value, value) if isinstance(value, str) else value for key, value in kwargs.items()}
    with pytest.raises(TexsynthError, match=message):
        synthesize(exemplar, steps=1, size=16, coarse_levels=1, **kwargs, **TINY_BACKBONE)


def test_one_synthesis_runs_on_one_device_and_auto_means_one(exemplar):
    """devices=2 used to start DDP: the calling script ran again in a second process, and both
    processes optimized the same image."""
    from texsynth.trainer import make_trainer

    assert make_trainer(1, logdir=False, accelerator="cpu", devices="auto", progress_bar=False).num_devices == 1
    result = synthesize(exemplar, steps=1, size=16, seed=0, coarse_levels=0, devices="auto", accelerator="cpu",
                        **TINY_BACKBONE)
    assert result.image.shape == (3, 16, 16)
    with pytest.raises(TexsynthError, match=r"accelerator 'cpu' with devices \[0\]: .*CPUAccelerator"):
        make_trainer(1, logdir=False, accelerator="cpu", devices=[0])  # Lightning's TypeError, in one line
