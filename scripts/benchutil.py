"""Helpers shared by the benchmark scripts (bench_engine.py, bench_collectives.py).

    from benchutil import tune_malloc, malloc_note
    tuned = tune_malloc()                  # before the first big allocation
    print(malloc_note(requested=True, tuned=tuned))
"""
from __future__ import annotations

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from <malloc.h>
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def tune_malloc() -> bool:
    """Stop glibc from returning freed heap memory to the OS (M_TRIM_THRESHOLD at 1 GiB)
    and from serving big arrays with fresh mmaps (M_MMAP_THRESHOLD at its 32 MiB maximum).
    Without this, the megabytes freed at the end of a step (or of a call: MPICH's own
    all-reduce allocates a temporary per call) are trimmed, and the next one page-faults
    them back in, one 4 KiB page at a time. It applies to the whole process, the MPI
    library included, so both sides of a comparison get it. Blocks above 32 MiB are still
    mmapped. Returns whether it took effect (False off glibc)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return (bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
            and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)))


def malloc_note(requested: bool, tuned: bool) -> str:
    """One phrase for a report header: which malloc the numbers were measured with."""
    if not requested:
        return "default glibc malloc"
    return "glibc malloc tuned (mallopt)" if tuned else "malloc tuning unavailable"
