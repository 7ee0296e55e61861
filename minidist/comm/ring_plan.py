"""The ring all-reduce's per-call setup, cached: `cached_schedule(size, rank, count)` is
``list(ring_schedule(size, rank, count))`` (the 2(N-1) send/receive slices), built once
per (N, rank, count) instead of on every call.

Building it (chunk bounds, two slices per step) costs a few microseconds of Python, a
sizeable share of a small all-reduce at N = 2 (docs/performance.md). Slices hold no
array, so a cached schedule keeps nothing alive; the dtype does not enter (slices count
elements). At most `MAX_PLANS` schedules, least recently used dropped. Callers only read
the list.
"""
from __future__ import annotations

from collections import OrderedDict

MAX_PLANS = 64

_plans: OrderedDict = OrderedDict()


def cached_schedule(size: int, rank: int, count: int) -> list:
    """``list(ring.ring_schedule(size, rank, count))``, reused when asked again."""
    key = (size, rank, count)
    steps = _plans.get(key)
    if steps is None:
        from .ring import ring_schedule  # ring.py imports this module: imported late, no cycle

        steps = _plans[key] = list(ring_schedule(size, rank, count))
        if len(_plans) > MAX_PLANS:
            _plans.popitem(last=False)
    return steps


def clear() -> None:
    """Forget every cached schedule."""
    _plans.clear()
