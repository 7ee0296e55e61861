"""The ring all-reduce's per-call setup, cached: `ring_steps` returns the `RingSteps` (the
schedule's 2(N-1) send/receive views) of an earlier call on the same arrays.

Building the schedule (chunk bounds, one view per step) costs a few microseconds of
Python, about a fifth of a small all-reduce at N = 2 (docs/performance.md). Repeated
calls on the same buffer (DDP's buckets, a benchmark loop, the communicator's reused
receive scratch) find it here, keyed by the arrays' identities, rank, size, count, dtype
and op. Only buffers up to `MAX_PLAN_BYTES` are cached (above that the setup is noise
next to the transfers, and a cached plan keeps its arrays alive); at most `MAX_PLANS`.
"""
from __future__ import annotations

from collections import OrderedDict

MAX_PLANS = 8
MAX_PLAN_BYTES = 1 << 20

_plans: OrderedDict = OrderedDict()


def ring_steps(flat, rank: int, size: int, op: str, ufunc, buffer):
    """``RingSteps(flat, rank, size, op, ufunc, buffer)``, reused when the same arrays
    come again. The plan holds `flat` and `buffer` alive, so an id is never reused by
    another array while its plan is cached."""
    from .ring import RingSteps  # ring.py calls this module: imported late, no cycle

    if flat.nbytes > MAX_PLAN_BYTES:
        return RingSteps(flat, rank, size, op, ufunc, buffer)
    key = (id(flat), id(buffer), rank, size, flat.size, flat.dtype, op, ufunc)
    steps = _plans.get(key)
    if steps is None:
        steps = _plans[key] = RingSteps(flat, rank, size, op, ufunc, buffer)
        if len(_plans) > MAX_PLANS:
            _plans.popitem(last=False)
    return steps


def clear() -> None:
    """Forget every cached plan (and release the arrays they hold)."""
    _plans.clear()
