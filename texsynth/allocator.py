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
nothing. Kept blocks fragment the heap: a 2048x2048 weight-free step peaked at 21.4 GiB with
it against 20.2 GiB without (23.3 GiB with 1 GiB blocks kept), above the memory guard's
estimate. So ``TEXSYNTH_KEEP_FREED_MEMORY`` chooses: ``1`` always, ``0`` never, ``auto`` for
CPU runs of outputs up to :data:`AUTO_MAX_PIXELS`. Unset, a library call leaves glibc alone
(the process is its host's) and the ``texsynth`` command, whose process it is, runs ``auto``.
Trainers from ``texsynth.trainer.make_trainer`` apply the choice when a fit starts
(:class:`~texsynth.callbacks.KeepFreedMemory`); or call :func:`keep_freed_memory` yourself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

from texsynth._logging import log
from texsynth.errors import InvalidArgumentError

#: blocks up to this size come from the heap and are reused (those of a 256x256 evaluation
#: are at most 100 MB); larger ones are mapped and unmapped as before
KEEP_BLOCKS_UP_TO = 256 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1
#: glibc's initial M_MMAP_THRESHOLD and M_TRIM_THRESHOLD
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
#: where glibc's own adaptive mmap threshold ends up once large blocks have been freed (its
#: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit); setting a threshold turns the adaptation off for good,
#: so giving kept memory back restores this steady state rather than the start-up value
GLIBC_ADAPTED_THRESHOLD = 32 << 20
_applied = False

#: the environment variable that chooses (module docstring)
KEEP_FREED_MEMORY_ENV = "TEXSYNTH_KEEP_FREED_MEMORY"
#: the largest output (pixels, all variations together) ``auto`` keeps freed memory for: at
#: 1024x1024 it added 0.44 GiB to a 5.9 GiB peak (weight-free), at 2048x2048 1.2 GiB to 20.2
AUTO_MAX_PIXELS = 1024 * 1024
_POLICIES = {"1": "always", "true": "always", "yes": "always", "on": "always",
             "0": "never", "false": "never", "no": "never", "off": "never", "auto": "auto"}


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


def give_back_freed_memory() -> bool:
    """Undo :func:`keep_freed_memory`: glibc's adapted thresholds again, and the kept memory
    returned to the system (``malloc_trim``); True if it had applied."""
    global _applied
    if not _applied:
        return False
    libc = _glibc()
    set_malloc_thresholds(GLIBC_ADAPTED_THRESHOLD)
    libc.malloc_trim(0)
    _applied = False
    log.debug("glibc malloc: kept memory given back")
    return True


def keep_freed_memory_policy() -> str:
    """``"always"``, ``"never"`` (also when unset) or ``"auto"``, from ``TEXSYNTH_KEEP_FREED_MEMORY``."""
    value = os.environ.get(KEEP_FREED_MEMORY_ENV, "").strip().lower()
    if not value:
        return "never"
    if value not in _POLICIES:
        raise InvalidArgumentError(f"{KEEP_FREED_MEMORY_ENV}={value!r}: expected 1, 0 or auto")
    return _POLICIES[value]


def kept_memory_for_run(pixels: int, on_cpu: bool) -> bool:
    """Keep freed memory, or give it back, as the environment's policy wants for a run of
    ``pixels`` output pixels; under ``auto`` a large run after small ones in one process (a
    coarse stage before its full size, a batch of mixed sizes) gets glibc's behaviour back.
    True if memory is kept for the run."""
    policy = keep_freed_memory_policy()
    if wants_kept_memory(pixels, on_cpu, policy):
        return keep_freed_memory()
    if policy == "auto":
        give_back_freed_memory()
    return False


def wants_kept_memory(pixels: int, on_cpu: bool, policy: str | None = None) -> bool:
    """Whether a run of ``pixels`` output pixels should keep freed memory under ``policy``
    (default: the environment's)."""
    policy = keep_freed_memory_policy() if policy is None else policy
    return policy == "always" or (policy == "auto" and on_cpu and pixels <= AUTO_MAX_PIXELS)


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
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        if hasattr(libc, "mallinfo2"):
            libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    return libc
