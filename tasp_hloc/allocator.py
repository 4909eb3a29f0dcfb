"""Keep freed memory in the process: glibc's malloc hands every block over its mmap threshold
(128 KiB, rising to at most 32 MiB) straight back to the kernel when freed, so each training
step or large image maps its activations afresh and pays a page fault per 4 KiB page.

Measured on this project's 2-core CPU VM, where page faults are dear (benchmarks/README.md): a
float32 training step took 8.5 s by default and 3.6 s with freed memory kept
(``python -m benchmarks.train_step --allocator both``), the default extraction of a 1024 px
photo 0.61 s and 0.32 s (``python -m benchmarks.extract_speed --allocator both``). The cost is
memory: the heap keeps its peak, and fragments (peak RSS 662 -> 999 MiB for that extraction).
jemalloc or tcmalloc preloaded with ``LD_PRELOAD`` do the like; this needs no system package.
"""

import ctypes
import ctypes.util
import sys

# glibc's malloc.h: mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30  # mallopt takes an int: 1 GiB, above any single tensor of a step here


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
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    )
