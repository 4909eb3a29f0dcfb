"""Keep freed memory in the process: glibc's malloc hands every block over its mmap threshold
(128 KiB, rising to at most 32 MiB) straight back to the kernel when freed, so each training
step or large image maps its activations afresh and pays a page fault per 4 KiB page.

Measured on a 2-core CPU VM, where page faults are dear (docs/results.md "Speed"): a
float32 training step took 8.5 s by default and 3.6 s with freed memory kept
(``python -m experiments.train_step --allocator both``), the default extraction of a 1024 px
photo 0.61 s and 0.32 s (``python -m benchmarks.speed extract --allocator both``). The cost is
memory: the heap keeps its peak, and fragments (peak RSS 662 -> 999 MiB for that extraction).
jemalloc or tcmalloc preloaded with ``LD_PRELOAD`` do the like; this needs no system package.
"""

import ctypes
import ctypes.util
import os
import sys

# glibc's malloc.h: mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30  # mallopt takes an int: 1 GiB, above any single tensor of a step here
OPT_OUT_ENV = "TASP_KEEP_FREED_MEMORY"  # "0": TaSP leaves the C library's default alone
_decided = False  # set once this process kept freed memory or chose glibc's default


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to 1 GiB for reuse instead of unmapping them.

    Affects allocations made after the call, in this process only (data-loader workers started
    later inherit it). Returns ``False``, changing nothing, where the C library is not glibc
    (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    global _decided
    _decided = True
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    )


def leave_default() -> None:
    """Keep the C library's default in this process: TaSP will not change it (benchmarks of
    the default allocator, or a process whose memory must not grow to its peak)."""
    global _decided
    _decided = True


def keep_freed_memory_once() -> bool:
    """What TaSP's first CPU forward calls: :func:`keep_freed_memory` unless this process has
    already decided (either call above) or ``TASP_KEEP_FREED_MEMORY=0`` is set. A user's own
    ``TaSP()`` thus runs at the command line's speed with nothing to do. Returns True when
    this call changed the allocator."""
    if _decided or os.environ.get(OPT_OUT_ENV, "1").strip() == "0":
        return False
    return keep_freed_memory()
