"""Exceptions texsynth raises for problems the user can fix.

The CLI turns every :class:`TexsynthError` into a one-line message and exit code 2, so a
message must name the offending input and say what is wrong with it.
"""

from __future__ import annotations


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
