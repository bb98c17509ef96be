"""Reading exemplars and writing results.

Every input becomes a float32 tensor of shape ``(1, 3, H, W)`` with values in ``[0, 1]``.
Transparent images are composited over white (the RGB under fully transparent pixels is
usually meaningless), EXIF orientation is applied, 16-bit grayscale keeps its precision.
Outputs are written atomically: a temporary file in the target directory, then a rename, so
an interrupted write never leaves a half-written PNG or clobbers an earlier result.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from texsynth.errors import ImageLoadError, InvalidArgumentError, OutputWriteError

ImageSource = Union[str, os.PathLike, Image.Image, torch.Tensor, np.ndarray]
Size = tuple[int, int]


def parse_size(size: int | str | tuple[int, int] | list[int] | None, name: str = "size") -> Size | None:
    """Accept ``256``, ``"256"``, ``"384x256"`` (width x height) or ``(height, width)``."""
    if size is None:
        return None
    if isinstance(size, str):
        parts = size.lower().split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise InvalidArgumentError(
                f"{name} must be N or WIDTHxHEIGHT, got {size!r}"
            ) from None
        if len(values) == 1:
            height = width = values[0]
        elif len(values) == 2:
            width, height = values
        else:
            raise InvalidArgumentError(f"{name} must be N or WIDTHxHEIGHT, got {size!r}")
    elif isinstance(size, bool):
        raise InvalidArgumentError(f"{name} must be a positive integer, got {size!r}")
    elif isinstance(size, int):
        height = width = size
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in size
    ):
        height, width = size
    else:
        raise InvalidArgumentError(f"{name} must be an int or (height, width), got {size!r}")
    if height <= 0 or width <= 0:
        raise InvalidArgumentError(f"{name} must be positive, got {height}x{width} (HxW)")
    return height, width


def load_image(source: ImageSource, name: str = "exemplar") -> torch.Tensor:
    """Load a path, PIL image, array or tensor as a ``(1, 3, H, W)`` float tensor in [0, 1]."""
    if isinstance(source, torch.Tensor):
        return _tensor_to_batch(source, name)
    if isinstance(source, np.ndarray):
        array = source if source.flags.writeable else source.copy()  # np.asarray(PIL image) is read-only
        return _tensor_to_batch(torch.from_numpy(np.ascontiguousarray(array)), name)
    if isinstance(source, Image.Image):
        return _pil_to_tensor(source)
    if isinstance(source, (str, os.PathLike)):
        return _pil_to_tensor(_open_path(Path(source)))
    raise InvalidArgumentError(
        f"{name} must be a path, PIL image, numpy array or tensor, got {type(source).__name__}"
    )


def _open_path(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: file is empty")
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{path}: corrupt or truncated image ({error})") from None


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        gray = torch.from_numpy(np.clip(array / peak, 0.0, 1.0))
        return gray.expand(3, *gray.shape).unsqueeze(0).contiguous()
    if image.mode == "F":
        gray = torch.from_numpy(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0))
        return gray.expand(3, *gray.shape).unsqueeze(0).contiguous()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


#: how far outside [0, 1] a float image may stray before it is refused: bicubic resampling overshoots
#: by a few percent, while 0-255 values or [-1, 1] normalization are far outside
RANGE_TOLERANCE = 0.1


def _tensor_to_batch(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() == 3 and tensor.shape[0] not in (1, 3) and tensor.shape[-1] in (1, 3):
        tensor = tensor.permute(2, 0, 1)  # HWC array
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[0] != 1 or tensor.shape[1] not in (1, 3):
        raise InvalidArgumentError(
            f"{name} tensor must have shape (3, H, W) or (1, 3, H, W), got {tuple(tensor.shape)}"
        )
    tensor = unit_range(tensor, f"{name} tensor")
    return tensor.expand(1, 3, *tensor.shape[-2:]).clone()


def unit_range(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """``tensor`` as float32 in [0, 1]: uint8 is scaled from 0-255; NaN, Inf and values far
    outside [0, 1] (0-255 floats, [-1, 1] normalization) are refused, slight overshoot clamped."""
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    tensor = tensor.detach().float()
    if not torch.isfinite(tensor).all():
        raise InvalidArgumentError(f"{name} contains NaN or Inf values")
    low, high = float(tensor.min()), float(tensor.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:  # e.g. a float array of 0-255 values
        raise InvalidArgumentError(
            f"{name} values must lie in [0, 1] (or be uint8, 0-255), got values from {low:g} to {high:g}"
        )
    return tensor.clamp(0.0, 1.0)


def center_crop_resize(image: torch.Tensor, size: Size) -> torch.Tensor:
    """Crop the centre to the target aspect ratio, then resize with anti-aliasing.

    This is the reference's DTD preprocessing (square crop, 256x256) generalised to any size.
    """
    height, width = image.shape[-2:]
    target_h, target_w = size
    scale = min(height / target_h, width / target_w)
    crop_h, crop_w = round(target_h * scale), round(target_w * scale)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    image = image[..., top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) == (target_h, target_w):
        return image.contiguous()
    return F.interpolate(
        image, size=size, mode="bicubic", antialias=True, align_corners=False
    ).clamp_(0.0, 1.0)


def to_pil(image: torch.Tensor) -> Image.Image:
    """Convert a ``(3, H, W)`` or ``(1, 3, H, W)`` tensor to an 8-bit RGB PIL image."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise InvalidArgumentError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    array = (image.detach().float().clamp(0, 1) * 255.0 + 0.5).floor().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy(), mode="RGB")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through ``write(fileobj)`` so readers see the old file or the new one."""
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():  # mkdir would say "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
            os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def require_writable_folder(path: str | os.PathLike, label: str) -> None:
    """Fail before a long run, not after it, when ``path``'s folder cannot receive files.

    Creates the folder (as writing would) and a probe file in it: permission bits alone
    say nothing for root, or for read-only mounts.
    """
    if Path(path).is_dir():  # renaming a finished file onto it would fail after the run
        raise OutputWriteError(f"{label}: {path} is a folder, not a file name")
    require_folder_accepts_files(Path(path).parent, label)


def require_folder_accepts_files(folder: str | os.PathLike, label: str) -> None:
    """Fail now, not at the first write, when ``folder`` (a log folder) cannot receive files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputWriteError(f"{label}: {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".texsynth-probe.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputWriteError(f"{label}: cannot write to folder {folder} ({error.strerror or error})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_format(path: str | os.PathLike) -> str:
    """The image format ``path``'s suffix names (PNG without one). A suffix Pillow cannot write
    (a typo such as ``.pgn``) is refused, so that callers can check it before a run, not after."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "PNG"
    image_format = Image.registered_extensions().get(suffix)
    if image_format is None or image_format not in Image.SAVE:
        raise InvalidArgumentError(f"{path}: cannot write {suffix!r} images; use .png (lossless), .tif, .webp or .jpg")
    return image_format


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save an image tensor as PNG (or the format the suffix names), atomically."""
    image_format = output_format(path)
    pil = to_pil(image)
    try:
        return atomic_write(path, lambda stream: pil.save(stream, format=image_format))
    except OSError as error:
        raise OutputWriteError(f"{path}: cannot write output ({error.strerror or error})") from None
