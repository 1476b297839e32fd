"""Freed memory kept in the heap for reuse, in nbenv's own short-lived helper processes.

glibc serves allocations from 128 KB up (the threshold adapts, up to 32 MB) with mmap and
gives them back to the system on free, so each one costs fresh pages that the kernel
zeroes on first touch. An unpack worker allocates a buffer for every compressed member it
reads and every member it inflates whole, a download process one per MB it writes: set B's
unpacks took 21,800 page faults and 0.36-0.45 s of system time that way, 8,300 and
0.21-0.26 s with freed memory kept (same wheels, one process, alternating runs). The
memory kept is at most what the process held at its peak, and it goes with the process:
never call this in a user's process (a kernel), only in helpers that exit when done.
"""

from __future__ import annotations

import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_KEEP = 256 << 20  # bigger than any member inflated whole (wheelcache._ONE_SHOT: 64 MB)


def keep_freed_memory() -> bool:
    """Serve big allocations from the heap and keep what is freed there for the next ones
    (glibc's mallopt); False where that is not available (not glibc, not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # trim first: with the mmap threshold set, glibc no longer adapts the trim threshold
    return bool(mallopt(_M_TRIM_THRESHOLD, _KEEP)) and bool(mallopt(_M_MMAP_THRESHOLD, _KEEP))
