"""The batch manifest: one JSON line per finished work item, appended by many processes.

Every rank appends its records to the same ``manifest.jsonl``. A record is one ``write`` of
one line to a file opened with ``O_APPEND`` under an exclusive ``flock``, then ``fsync``: lines
from different processes never interleave and a crash loses at most the line being written.
Readers skip a torn last line. An item's state is its *latest* record, so a re-run simply
appends; :meth:`Manifest.compact` rewrites the file with one line per item (atomically) when
a batch ends, after every rank has stopped writing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from texsynth.image_io import atomic_write

try:  # POSIX; elsewhere O_APPEND alone keeps single-line writes whole on local disks
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MANIFEST_NAME = "manifest.jsonl"

#: the states a record can report
DONE, FAILED, INTERRUPTED = "done", "failed", "interrupted"


def item_key(record: dict[str, Any]) -> tuple[str, int]:
    """Work items are identified by exemplar (path relative to the source folder) and variation."""
    return str(record["exemplar"]), int(record["variation"])


class Manifest:
    """Append-only JSON-lines log of work item results, safe for concurrent writers."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @contextmanager
    def _locked(self, flags: int) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, flags, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=False) + "\n").encode()
        with self._locked(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
            os.write(fd, line)
            os.fsync(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, oldest first (torn or foreign lines are skipped)."""
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
                item_key(record)
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def latest(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Each item's most recent record."""
        return {item_key(record): record for record in self.records()}

    def compact(self, order: Iterable[tuple[str, int]] | None = None) -> None:
        """Rewrite with one line per item (its latest record), items listed in ``order`` first."""
        with self._locked(os.O_RDWR | os.O_CREAT):
            latest = self.latest()
            keys = [key for key in dict.fromkeys(order or ()) if key in latest]
            listed = set(keys)
            keys += [key for key in latest if key not in listed]
            text = "".join(json.dumps(latest[key], sort_keys=False) + "\n" for key in keys)
            atomic_write(self.path, lambda stream: stream.write(text.encode()))
