"""Freed memory is kept for reuse: repeated large allocations stop faulting pages in."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import pytest

from texsynth.allocator import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc's allocator only")

PROBE = textwrap.dedent("""
    import resource, sys, torch
    from texsynth.allocator import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    if sys.argv[1] == "trainer":
        from texsynth.trainer import make_trainer
        make_trainer(1, logdir=False, progress_bar=False)
    torch.empty(25_000_000).fill_(1.0)  # 100 MB (above glibc's adaptive limit of 32 MiB), freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.empty(25_000_000).fill_(1.0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _page_faults(mode: str, **env: str) -> int:
    import os

    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                            env={**os.environ, **env}, check=True)
    return int(result.stdout.split()[-1])


def test_kept_memory_is_reused_without_page_faults(monkeypatch):
    monkeypatch.delenv("TEXSYNTH_KEEP_FREED_MEMORY", raising=False)
    pages = 100_000_000 // resource.getpagesize()
    assert _page_faults("default") > 8 * pages  # each of the 10 blocks mapped and faulted in again
    assert _page_faults("keep") < 4 * pages  # the freed pages are reused (mostly)
    assert _page_faults("trainer") > 8 * pages  # opt-in: make_trainer leaves glibc alone
    assert _page_faults("trainer", TEXSYNTH_KEEP_FREED_MEMORY="1") < 4 * pages  # unless asked


def test_memory_this_process_keeps_counts_as_available(monkeypatch):
    import torch

    from texsynth import allocator
    from texsynth.memory import available_bytes

    assert allocator.keep_freed_memory()
    torch.empty(25_000_000).fill_(1.0)  # 100 MB, freed at once and kept
    kept = allocator.kept_free_bytes()
    assert kept >= 90_000_000
    with_kept = available_bytes(torch.device("cpu"))
    monkeypatch.setattr(allocator, "kept_free_bytes", lambda: 0)
    monkeypatch.setattr("texsynth.memory.kept_free_bytes", lambda: 0)
    assert with_kept - available_bytes(torch.device("cpu")) > 0.5 * kept  # MemAvailable moves a little between reads
