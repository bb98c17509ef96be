from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from texsynth.errors import ImageLoadError, InvalidArgumentError, OutputWriteError
from texsynth.image_io import atomic_write, center_crop_resize, load_image, parse_size, save_image


def _gradient(width: int = 6, height: int = 4) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    return np.stack([np.tile(x, (height, 1))] * 3, axis=-1)


def test_rgb_png_round_trip(tmp_path):
    array = _gradient()
    Image.fromarray(array).save(tmp_path / "a.png")
    tensor = load_image(tmp_path / "a.png")
    assert tensor.shape == (1, 3, 4, 6) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[0].permute(1, 2, 0), torch.from_numpy(array).float() / 255)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA"])
def test_other_modes_load_as_rgb(tmp_path, mode):
    base = Image.fromarray(_gradient())
    if mode == "I;16":
        image = Image.fromarray((np.linspace(0, 65535, 24).reshape(4, 6)).astype(np.uint16))
    else:
        image = base.convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    tensor = load_image(path)
    assert tensor.shape == (1, 3, 4, 6)
    assert 0 <= float(tensor.min()) and float(tensor.max()) <= 1
    if mode == "I;16":  # full 16-bit range maps to [0, 1]
        assert float(tensor.max()) == pytest.approx(1.0) and float(tensor[0, 0, 0, 1]) == pytest.approx(2849 / 65535, abs=1e-3)


def test_transparent_pixels_are_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[1, 1] = (0, 0, 0, 0)  # transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    tensor = load_image(tmp_path / "t.png")
    torch.testing.assert_close(tensor[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(tensor[0, :, 1, 1], torch.ones(3))


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(_gradient(width=6, height=4))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").shape == (1, 3, 6, 4)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_text("hello"), "not an image"),
    ],
)
def test_unreadable_inputs_name_the_file(tmp_path, make, message):
    path = tmp_path / "input.png"
    make(path)
    with pytest.raises(ImageLoadError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_png_is_reported(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(path)


def test_tensor_and_array_inputs():
    assert load_image(torch.rand(3, 5, 7)).shape == (1, 3, 5, 7)
    assert load_image(torch.rand(5, 7)).shape == (1, 3, 5, 7)
    assert load_image(np.zeros((5, 7, 3), dtype=np.uint8)).shape == (1, 3, 5, 7)
    with pytest.raises(InvalidArgumentError, match=r"\(3, H, W\)"):
        load_image(torch.rand(2, 3, 5, 7))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        load_image(torch.full((3, 4, 4), float("nan")))


def test_float_images_outside_the_unit_range_are_refused_not_clamped():
    as_read = np.asarray(Image.fromarray(_gradient(width=6, height=4))).astype(np.float32)  # 0-255, a common slip
    with pytest.raises(InvalidArgumentError, match=r"exemplar tensor values must lie in \[0, 1\].* to 255"):
        load_image(as_read, name="exemplar")
    torch.testing.assert_close(load_image(as_read / 255.0), load_image(as_read.astype(np.uint8)))
    with pytest.raises(InvalidArgumentError, match="from -0.5 to"):
        load_image(torch.linspace(-0.5, 0.5, 48).reshape(3, 4, 4))
    overshoot = load_image(torch.full((3, 4, 4), 1.05))  # bicubic resampling overshoot: kept, clamped
    assert float(overshoot.max()) == 1.0


def test_centre_crop_resize_is_the_reference_preprocessing():
    image = torch.rand(1, 3, 40, 60)
    out = center_crop_resize(image, (20, 20))
    assert out.shape == (1, 3, 20, 20)
    same = center_crop_resize(image, (40, 40))
    torch.testing.assert_close(same, image[..., :, 10:50])


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.integers(-5, 5000), st.text(max_size=12), st.tuples(st.integers(-3, 99), st.integers(-3, 99))))
def test_parse_size_accepts_valid_sizes_and_names_bad_ones(value):
    try:
        size = parse_size(value)
    except InvalidArgumentError as error:
        assert "size" in str(error)
        return
    assert size is not None and size[0] > 0 and size[1] > 0


def test_parse_size_forms():
    assert parse_size("384x256") == (256, 384)
    assert parse_size(64) == (64, 64) and parse_size("64") == (64, 64)
    assert parse_size((10, 20)) == (10, 20) and parse_size(None) is None


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_loader_never_crashes_on_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "blob.png"
    path.write_bytes(data)
    try:
        tensor = load_image(path)
    except ImageLoadError as error:
        assert str(path) in str(error)
    else:
        assert tensor.dim() == 4 and tensor.shape[1] == 3


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.png"
    target.write_bytes(b"old result")

    def failing(stream):
        stream.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old result"
    assert sorted(os.listdir(tmp_path)) == ["result.png"]  # no temporary left behind


def test_save_image_creates_directories_and_reports_unwritable_paths(tmp_path):
    path = save_image(torch.rand(3, 8, 8), tmp_path / "a" / "b" / "c.png")
    with Image.open(path) as image:
        assert image.size == (8, 8)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputWriteError, match=r"inside.png: cannot write output \(Not a directory\)"):
        save_image(torch.rand(3, 8, 8), blocker / "inside.png")
    assert blocker.read_text() == "x"


def test_the_output_format_follows_the_suffix_and_a_suffix_no_image_takes_is_refused(tmp_path):
    with Image.open(save_image(torch.rand(3, 8, 8), tmp_path / "no_suffix")) as image:
        assert image.format == "PNG"
    with Image.open(save_image(torch.rand(3, 8, 8), tmp_path / "out.JPG")) as image:
        assert image.format == "JPEG"
    for typo in ("out.pgn", "out.txt", "out.psd"):  # .psd: Pillow reads it but cannot write it
        with pytest.raises(InvalidArgumentError, match=rf"{typo}: cannot write '\.{typo[4:]}' images"):
            save_image(torch.rand(3, 8, 8), tmp_path / typo)
        assert not (tmp_path / typo).exists()


def test_outputs_get_the_usual_file_mode_not_the_temporary_files(tmp_path):
    mask = os.umask(0o022)
    try:
        path = save_image(torch.rand(3, 8, 8), tmp_path / "out.png")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_array_read_from_a_pil_image_loads_without_a_warning(recwarn):
    """np.asarray(PIL image) is read-only; torch warned about it on every load."""
    array = np.asarray(Image.fromarray(_gradient(width=6, height=4)))
    assert not array.flags.writeable
    loaded = load_image(array)
    assert loaded.shape == (1, 3, 4, 6)
    assert torch.allclose(loaded[0].permute(1, 2, 0), torch.from_numpy(array.copy()).float() / 255)
    assert not [w for w in recwarn if "not writable" in str(w.message)]
