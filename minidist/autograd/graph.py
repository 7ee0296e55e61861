"""The recorded graph: grad mode (`no_grad`), what one op call leaves behind (`Node`,
`Context`), and `unbroadcast`, which sums a broadcast gradient back to its input's shape.
"""
from __future__ import annotations

import itertools
import threading

import numpy as np


class _GradState(threading.local):
    enabled = True  # class default: every thread starts with grad mode on


_grad_state = _GradState()


def is_grad_enabled() -> bool:
    return _grad_state.enabled


class no_grad:
    """Context manager (and decorator) under which no graph is recorded."""

    def __enter__(self):
        self._prev = is_grad_enabled()
        _grad_state.enabled = False
        return self

    def __exit__(self, *exc):
        _grad_state.enabled = self._prev
        return False

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        wrapped.__name__ = getattr(fn, "__name__", "wrapped")
        wrapped.__doc__ = getattr(fn, "__doc__", None)
        return wrapped


class Context:
    """What forward leaves for backward: saved arrays and any attribute it sets."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()

    def save_for_backward(self, *values):
        self.saved_tensors = values


class Node:
    """One recorded call: the Function, its context and the Tensors it consumed."""

    __slots__ = ("fn", "ctx", "parents", "seq")
    _counter = itertools.count()

    def __init__(self, fn, ctx, parents):
        self.fn = fn
        self.ctx = ctx
        self.parents = parents  # tuple, one entry per positional input: Tensor or None
        self.seq = next(Node._counter)  # creation order: backward runs newest first


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` over the axes that broadcasting added or stretched to reach `shape`."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)
