"""`ScratchCache`: the collectives' receive buffers, kept between calls.

Why it exists (one line): a fresh 32 MiB buffer is page-faulted in on every call (glibc
hands big freed blocks back to the OS), which made a 64 MiB ring all-reduce about 1.5x
slower on 2 ranks (measured with and without, loaded machine: docs/reliability.md).

Each buffer serves one collective at a time: `take` gives the smallest idle buffer that is
large enough; if none is, the largest idle one is dropped for a larger one (the cache only
grows); if none is idle, a new one joins. So rings in flight at once hold different
buffers, and the cache holds as many as were ever in use at once. Apart from those, `kept`
holds the latency path's exchanges (latency.py: buffers and persistent requests, one set per
(count, dtype, tag)), the same each call.
"""
from __future__ import annotations

import numpy as np

KEPT_OBJECTS = 16  # the latency path's exchanges (buffers of 2 * at most allreduce.LATENCY_BYTES)


class ScratchCache:
    """Idle byte buffers; `take` carves a typed 1-D array out of one, `give_back` returns it."""

    def __init__(self):
        self._idle: list[np.ndarray] = []  # idle typed arrays; their .base is the cached bytes
        self._kept: dict = {}  # key -> what `keep` stored

    def take(self, count: int, dtype: np.dtype) -> np.ndarray:
        """A 1-D array of `count` elements of `dtype` (uninitialised), all its own until
        `give_back`."""
        idle = self._idle
        nbytes = count * dtype.itemsize
        last = idle[-1] if idle else None
        if last is not None and last.size == count and last.dtype == dtype and last.base.nbytes == nbytes:
            return idle.pop()  # the buffer the last call gave back, an exact fit: the common case
        fits = [i for i, a in enumerate(idle) if a.base.nbytes >= nbytes]
        if fits:
            buf = idle.pop(min(fits, key=lambda i: idle[i].base.nbytes)).base
        else:
            if idle:  # grow-only: the largest idle buffer makes way for a larger one
                idle.pop(max(range(len(idle)), key=lambda i: idle[i].base.nbytes))
            buf = np.empty(nbytes, np.uint8)
        return np.ndarray(count, dtype, buf)

    def give_back(self, array: np.ndarray) -> None:
        self._idle.append(array)

    def kept(self, key):
        """What `keep` stored under `key` (None if nothing): for a caller that is done with
        it before anyone can ask again (a blocking exchange, one thread), e.g. the latency
        path's exchanges (latency.py), each with ``nbytes`` and ``free()``."""
        return self._kept.get(key)

    def keep(self, key, build):
        """Store ``build()`` under `key` and return it; None, building nothing, when
        KEPT_OBJECTS are kept already: the first kinds stay (a program that cycles through
        more kinds runs the others without, instead of rebuilding on every call)."""
        if len(self._kept) >= KEPT_OBJECTS:
            return None
        kept = self._kept[key] = build()
        return kept

    def forget(self, key) -> None:
        """Free and drop what is kept under `key` (after an error left it in doubt)."""
        kept = self._kept.pop(key, None)
        if kept is not None:
            kept.free()

    @property
    def idle_bytes(self) -> int:
        return sum(a.base.nbytes for a in self._idle) + sum(k.nbytes for k in self._kept.values())

    def clear(self) -> None:
        self._idle.clear()
        for kept in self._kept.values():
            kept.free()  # persistent requests are MPI's: freed, not just forgotten
        self._kept.clear()
