"""glibc's malloc told to keep freed memory in the process (mallopt), the default when
minidist runs as one of several MPI ranks (``MINIDIST_MALLOC=default`` turns it off).

A training step frees megabytes of temporaries at its end; by default glibc hands big
freed blocks back to the OS (trim, munmap) and the next step page-faults them back in,
4 KiB at a time. Measured here (docs/performance.md), paired runs: the CNN engine step
took 0.52-0.65x the time with this setting (page faults per step ~4000 -> 4, peak memory
+1 MiB), a DDP CNN step on 2 ranks 0.33-0.5x. Needs only ctypes.
"""
from __future__ import annotations

import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from <malloc.h>
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 1 << 30
kept = False  # whether keep_freed_memory took effect in this process


def wanted() -> bool:
    """Whether ``$MINIDIST_MALLOC`` leaves the default on (anything but "default")."""
    return os.environ.get("MINIDIST_MALLOC", "keep") != "default"


def keep_freed_memory() -> bool:
    """M_TRIM_THRESHOLD at 1 GiB (freed heap memory stays in the process) and
    M_MMAP_THRESHOLD at its 32 MiB maximum (arrays below it come from the heap, not from
    fresh mmaps). It applies to the whole process, the MPI library included; blocks above
    32 MiB are still mmapped. Returns whether it took effect (False off glibc)."""
    import ctypes

    global kept
    try:
        libc = ctypes.CDLL("libc.so.6")
        kept = kept or (bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)))
    except (OSError, AttributeError):  # no glibc, or a libc without mallopt (musl)
        pass
    return kept
