"""The ring's per-call setup, cached: `remember(key, build)` returns what ``build()``
returned the first time `key` was asked for. ring.py keys the ring's schedule (the 2(N-1)
send/receive slices) by (N, rank, count), so it is built once instead of on every call.

Building it (chunk bounds, two slices per step) costs a few microseconds of Python, a
sizeable share of a small all-reduce at N = 2 (docs/performance.md). Slices hold no
array, so a cached schedule keeps nothing alive. At most `MAX_PLANS` entries, the least
recently used dropped. Callers only read what they get.
"""
from __future__ import annotations

from collections import OrderedDict

MAX_PLANS = 64

_plans: OrderedDict = OrderedDict()


def remember(key, build):
    """``build()``'s result for `key`, built on the first call and reused after."""
    value = _plans.get(key)
    if value is None:
        value = _plans[key] = build()
        if len(_plans) > MAX_PLANS:
            _plans.popitem(last=False)  # the least recently used
    else:
        _plans.move_to_end(key)
    return value


def clear() -> None:
    """Forget every cached entry."""
    _plans.clear()
