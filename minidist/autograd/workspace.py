"""Scratch arrays reused step over step: ``scratch(name, shape, dtype)``.

A training step repeats the same shapes, so an op's temporaries (a padded input, a
mask, a product that is summed at once) can live in one buffer per (name, shape, dtype)
instead of a fresh array each call, which the allocator would hand back to the OS and
page-fault in again next step. The one rule: a scratch array never leaves the call that
took it (never returned, never saved for backward), because the next call with the same
key overwrites it. Its contents on arrival are undefined: write before reading.

``zeros(shape, dtype)`` is the one kind of kept array with defined contents: read-only
zeros, filled once. Buffers are per thread; at most `MAX_BUFFERS` are kept (least
recently used dropped). ``fresh_arrays()`` turns reuse off (every call gets a new array),
for tests comparing results with and without it; ``clear()`` drops every buffer.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

MAX_BUFFERS = 64


class _Buffers(threading.local):
    def __init__(self):
        self.arrays: OrderedDict = OrderedDict()
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
        if len(arrays) > MAX_BUFFERS:
            arrays.popitem(last=False)
    else:
        arrays.move_to_end(key)
    return buf


def nbytes() -> int:
    """Bytes held in this thread's buffers."""
    return sum(a.nbytes for a in _buffers.arrays.values())


def keys() -> list:
    """This thread's (name, shape, dtype) keys, least recently used first."""
    return list(_buffers.arrays)


def clear() -> None:
    """Drop every buffer of this thread."""
    _buffers.arrays.clear()


@contextmanager
def fresh_arrays():
    """Within this block, `scratch` returns a new array on every call (no reuse)."""
    previous, _buffers.reuse = _buffers.reuse, False
    try:
        yield
    finally:
        _buffers.reuse = previous
