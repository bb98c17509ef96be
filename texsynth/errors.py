"""Exceptions texsynth raises for problems the user can fix.

The CLI turns every :class:`TexsynthError` into a one-line message and exit code 2, so a
message must name the offending input and say what is wrong with it.
"""

from __future__ import annotations

import difflib
import os
import pickle
from typing import Collection, Mapping


class TexsynthError(Exception):
    """Base class of errors caused by user input or environment, not by a texsynth bug."""


class InvalidArgumentError(TexsynthError, ValueError):
    """An option or argument has a value texsynth cannot use."""


class CheckpointError(InvalidArgumentError):
    """A checkpoint cannot be resumed: unreadable, not texsynth's, or made with other settings."""


class ImageLoadError(TexsynthError, OSError):
    """An exemplar could not be read as an image."""


class WeightsUnavailableError(TexsynthError, OSError):
    """Pretrained weights were requested but cannot be obtained."""


class UnknownNameError(InvalidArgumentError, KeyError):
    """A registry lookup for a name nobody registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutputWriteError(TexsynthError, OSError):
    """A result could not be written (read-only or full disk, bad path)."""


class UnknownOptionError(InvalidArgumentError, TypeError):
    """A keyword option nothing takes: a TypeError, as Python's own, and one line on the CLI."""


def require_known_options(options: Collection[str], accepted: Collection[str], caller: str,
                          hints: Mapping[str, str] | None = None) -> None:
    """Refuse an option name ``caller`` would pass on to a function that does not take it:
    with a hint (``hints``) or the closest accepted names, instead of a TypeError about an
    inner function the caller never called (or, in a batch, one such failure per item)."""
    unknown = sorted(set(options) - set(accepted))
    if not unknown:
        return
    name = unknown[0]
    hint = (hints or {}).get(name)
    if hint is None:
        close = difflib.get_close_matches(name, sorted(accepted), n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"options: {', '.join(sorted(accepted))}"
    raise UnknownOptionError(f"{caller}() got an unknown option {name!r}; {hint}")


def require_flag(value: object, name: str, none_means: str | None = None) -> bool | None:
    """``value`` if it is True or False (or None, where ``none_means`` says what None does):
    ``"no"`` or ``0.0`` would pass an ``if`` as something else."""
    if value is None and none_means is not None:
        return None
    if not isinstance(value, bool):
        allowed = "True or False" if none_means is None else f"True, False or None ({none_means})"
        raise InvalidArgumentError(f"{name} must be {allowed}, got {value!r}")
    return value


def require_path(value: object, name: str) -> object:
    """``value`` if it can name a file (a str or os.PathLike), else a one-line error naming ``name``
    (``os.fspath``'s TypeError names neither the option nor the value)."""
    if isinstance(value, (str, os.PathLike)):
        return value
    raise InvalidArgumentError(f"{name} must be a path (str or os.PathLike), got {value!r}")


def require_count(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum`` (a count of steps, stages, …), else a
    one-line error naming ``name``: floats and bools are refused, not truncated."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise InvalidArgumentError(f"{name} must be {kind}, got {value!r}")
    return value


def torch_load_failure(error: Exception) -> str:
    """Why ``torch.load`` refused a file, in one line: its own messages run to many lines, and
    the ``weights_only`` one advises an unsafe load texsynth does not offer."""
    message = str(error)
    if isinstance(error, (pickle.UnpicklingError, EOFError)) or "Weights only load failed" in message:
        return "corrupt, not saved by torch.save, or holding more than tensors"
    if "_use_new_zipfile_serialization" in message:  # torch.load(mmap=True) of a non-zip file
        return "not a file written by torch.save"
    if "PytorchStreamReader" in message:
        return "corrupt or truncated"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
        # its first line names no key: say which (a loss's state from another texsynth version)
        return f"its saved state does not fit this run: {lines[1]}"
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
