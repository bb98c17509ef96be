"""Dataset preparation: what the reference did to the Describable Textures Dataset.

Walk a folder, centre-crop every image to a square, resize it with anti-aliasing, and save
it as PNG under the same relative path in another folder. Unreadable files are skipped with
a warning; inputs are never modified.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tqdm import tqdm

from texsynth.errors import ImageLoadError, InvalidArgumentError
from texsynth.image_io import center_crop_resize, load_image, save_image

SKIPPED_NAMES = {".DS_Store", "Thumbs.db"}


def prepare_folder(source: str | os.PathLike, destination: str | os.PathLike, size: int = 256,
                   progress: bool = True) -> tuple[int, int]:
    """Returns (images written, files skipped: unreadable, or a second image for one PNG name)."""
    source, destination = Path(source), Path(destination)
    if not source.is_dir():
        raise InvalidArgumentError(f"{source}: not a folder")
    if size < 1:
        raise InvalidArgumentError(f"--size must be a positive integer, got {size}")
    if destination.resolve() == source.resolve():
        raise InvalidArgumentError(f"{destination}: must differ from the source folder")
    if destination.exists() and not destination.is_dir():  # else every write fails, the first one reported
        raise InvalidArgumentError(f"{destination}: exists and is not a folder")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.name not in SKIPPED_NAMES
                   and destination.resolve() not in p.resolve().parents)
    written = skipped = 0
    written_from: dict[str, Path] = {}  # a.jpg and a.png both become a.png: the first one wins
    for path in tqdm(files, desc="prepare", unit="img", disable=not progress, file=sys.stderr):
        target = destination / path.relative_to(source).with_suffix(".png")
        name_key = str(target).casefold()  # case-folded, as macOS compares names
        if name_key in written_from:  # checked before decoding an image that would not be written
            _skip(f"{path}: {target} was already written from {written_from[name_key].name}; rename one of them")
            skipped += 1
            continue
        try:
            image = load_image(path, name=str(path))
        except ImageLoadError as error:
            _skip(str(error))
            skipped += 1
            continue
        save_image(center_crop_resize(image, (size, size)), target)
        written_from[name_key] = path
        written += 1
    return written, skipped


def _skip(reason: str) -> None:
    tqdm.write(f"texsynth: warning: skipping {reason}", file=sys.stderr)
