"""Scratch arrays reused step over step: ``scratch(name, shape, dtype)``.

A training step repeats the same shapes, so an op's temporaries (a padded input, a
mask, a product that is summed at once) can live in one buffer per (name, shape, dtype)
instead of a fresh array each call, which the allocator would hand back to the OS and
page-fault in again next step. The one rule: a scratch array never leaves the call that
took it (never returned, never saved for backward), because the next call with the same
key overwrites it. Its contents on arrival are undefined: write before reading.

``zeros(shape, dtype)``: read-only zeros, filled once. ``recycled(shape, dtype)`` is for
results that do leave the call (an op's output, a gradient): a kept array is handed out
again only once nothing references it, as a caching allocator would. Buffers are per
thread, bounded (`MAX_BUFFERS`, `MAX_SHAPES`, `MAX_BYTES`; least recently used dropped).
``fresh_arrays()`` turns reuse off, for tests comparing results with and without it;
``clear()`` drops every buffer.
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

MAX_BUFFERS = 64
MAX_SHAPES, MAX_PER_SHAPE = 64, 8  # recycled arrays: shapes kept, arrays kept per shape
MAX_BYTES = 256 << 20  # scratch and recycled, each, per thread (least recently used dropped)


def _count_when_unreferenced() -> int:
    """sys.getrefcount of an array held by nothing but its pool, read as `recycled` reads
    it (the list, the loop's name, the call's argument: 3 in CPython 3.11). Never taken
    above 3: a tracer reading frames during import must not make reuse looser."""
    for buf in [np.empty(0)]:
        return min(sys.getrefcount(buf), 3)


_UNREFERENCED = _count_when_unreferenced()


class _Buffers(threading.local):
    def __init__(self):
        self.arrays: OrderedDict = OrderedDict()  # (name, shape, dtype) -> scratch array
        self.pools: OrderedDict = OrderedDict()  # (shape, dtype) -> arrays handed out before
        self.nbytes = {"arrays": 0, "pools": 0}
        self.reuse = True


_buffers = _Buffers()


def scratch(name: str, shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of `shape` and `dtype`, the same one every
    time this thread asks for this (name, shape, dtype)."""
    return _kept(name, shape, dtype, np.empty)


def zeros(shape, dtype) -> np.ndarray:
    """A read-only C-contiguous array of zeros, the same one every time this thread asks
    for this (shape, dtype): filled once, not once per call (ReLU's forward compares
    against it; refilling a scratch buffer cost ~9 us per 256x512 float32 call)."""
    return _kept(None, shape, dtype, _read_only_zeros)


def recycled(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of `shape` and `dtype` that the caller may
    return or save for backward: one that this thread got here before and that nothing
    references any more (no tensor, view or name holds it: the graph that used it last
    step is gone), else a new one. So a training step's outputs and gradients reuse the
    previous step's memory instead of page-faulting fresh arrays in."""
    shape, dtype = tuple(shape), np.dtype(dtype)
    if not _buffers.reuse:
        return np.empty(shape, dtype)
    pools, key = _buffers.pools, (shape, dtype)
    pool = pools.get(key)
    if pool is None:
        pool = pools[key] = []
    else:
        pools.move_to_end(key)
    for buf in pool:
        if sys.getrefcount(buf) <= _UNREFERENCED:
            if buf.shape == shape and buf.dtype == dtype and buf.flags.writeable:
                return buf
            pool[:] = [b for b in pool if b is not buf]  # a former holder reshaped it or froze it
            _buffers.nbytes["pools"] -= buf.nbytes
            break
    buf = np.empty(shape, dtype)
    if len(pool) < MAX_PER_SHAPE:
        pool.append(buf)
        _buffers.nbytes["pools"] += buf.nbytes
        _drop_least_recent("pools", MAX_SHAPES)
    return buf


def _read_only_zeros(shape, dtype):
    out = np.zeros(shape, dtype)
    out.flags.writeable = False
    return out


def _kept(name, shape, dtype, make) -> np.ndarray:
    shape, dtype = tuple(shape), np.dtype(dtype)
    if not _buffers.reuse:
        return make(shape, dtype)
    arrays, key = _buffers.arrays, (name, shape, dtype)
    buf = arrays.get(key)
    if buf is None:
        buf = arrays[key] = make(shape, dtype)
        _buffers.nbytes["arrays"] += buf.nbytes
        _drop_least_recent("arrays", MAX_BUFFERS)
    else:
        arrays.move_to_end(key)
    return buf


def _drop_least_recent(kind: str, max_keys: int) -> None:
    """Drop the least recently used keys of `kind` ("arrays" or "pools") while there are
    more than `max_keys` or their arrays take more than MAX_BYTES; never the newest."""
    kept = getattr(_buffers, kind)
    while len(kept) > 1 and (len(kept) > max_keys or _buffers.nbytes[kind] > MAX_BYTES):
        _, dropped = kept.popitem(last=False)
        _buffers.nbytes[kind] -= sum(a.nbytes for a in dropped) if kind == "pools" else dropped.nbytes


def nbytes() -> int:
    """Bytes held in this thread's buffers, recycled arrays included (in use or not)."""
    return _buffers.nbytes["arrays"] + _buffers.nbytes["pools"]


def keys() -> list:
    """This thread's (name, shape, dtype) keys, least recently used first."""
    return list(_buffers.arrays)


def clear() -> None:
    """Drop every buffer of this thread."""
    _buffers.arrays.clear()
    _buffers.pools.clear()
    _buffers.nbytes = {"arrays": 0, "pools": 0}


@contextmanager
def fresh_arrays():
    """Within this block, `scratch` returns a new array on every call (no reuse)."""
    previous, _buffers.reuse = _buffers.reuse, False
    try:
        yield
    finally:
        _buffers.reuse = previous
