"""Keep freed memory for reuse instead of handing it back to the system (glibc).

An evaluation allocates and frees activations of tens to hundreds of MB. glibc serves blocks
that large with ``mmap`` and unmaps them when freed, so every evaluation faults its working
memory in again, page by page (about 200,000 page faults per evaluation of the weight-free
default at 256x256: a quarter of the CPU time went to the kernel). Raising glibc's mmap and
trim thresholds keeps those blocks in the heap, where the next evaluation reuses them:
weight-free evaluations 1.66x cheaper at 256x256 on CPU with blocks up to 256 MiB kept
(``benchmarks/allocator.py``). The cost is that a process keeps up to its peak of freed
memory until it exits.

It applies to the whole process and only to glibc's allocator (Linux); elsewhere it does
nothing. It is opt-in: kept blocks fragment the heap, and a 2048x2048 weight-free step
peaked at 21.4 GiB with it against 20.2 GiB without (23.3 GiB with 1 GiB blocks kept), above
the memory guard's estimate. ``texsynth.trainer.make_trainer`` applies it when
``TEXSYNTH_KEEP_FREED_MEMORY=1``; or call :func:`keep_freed_memory` yourself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

from texsynth._logging import log

#: blocks up to this size come from the heap and are reused (those of a 256x256 evaluation
#: are at most 100 MB); larger ones are mapped and unmapped as before
KEEP_BLOCKS_UP_TO = 256 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1
#: glibc's initial M_MMAP_THRESHOLD and M_TRIM_THRESHOLD
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
_applied = False


def set_malloc_thresholds(limit: int) -> bool:
    """Serve blocks up to ``limit`` bytes from the heap and trim it only past ``2 * limit``;
    True if glibc took both. ``GLIBC_DEFAULT_THRESHOLD`` puts glibc's start-up values back."""
    libc = _glibc()
    if libc is None:
        return False
    # int mallopt(int, int) returns 1 on success
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, min(limit, _INT_MAX))) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, min(2 * limit, _INT_MAX)))


def keep_freed_memory(limit: int = KEEP_BLOCKS_UP_TO) -> bool:
    """Make glibc keep freed blocks of up to ``limit`` bytes for reuse; True if it applied.

    Idempotent.
    """
    global _applied
    if _applied:
        return True
    _applied = set_malloc_thresholds(limit)
    if _applied:
        log.debug("glibc malloc: freed blocks up to %d MiB are kept for reuse", limit >> 20)
    return _applied


def keep_freed_memory_if_asked() -> bool:
    """Apply :func:`keep_freed_memory` when ``TEXSYNTH_KEEP_FREED_MEMORY=1`` (opt-in)."""
    if os.environ.get("TEXSYNTH_KEEP_FREED_MEMORY", "").strip().lower() in ("1", "true", "yes", "on"):
        return keep_freed_memory()
    return False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def kept_free_bytes() -> int:
    """Bytes this process freed and kept for reuse (0 unless :func:`keep_freed_memory` applied).

    The system counts them as used, though the next run in this process reuses them; the
    memory guard adds them to what is available.
    """
    libc = _glibc() if _applied else None
    if libc is None or not hasattr(libc, "mallinfo2"):  # glibc >= 2.33
        return 0
    return int(libc.mallinfo2().fordblks)


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it (not musl, not macOS)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        if hasattr(libc, "mallinfo2"):
            libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    return libc
