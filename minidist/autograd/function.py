"""`Function`: an op's forward and backward, side by side.

A subclass defines two static methods on NumPy arrays::

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            return grad * b, grad * a

and is called as ``Mul.apply(x, y)`` on Tensors (or plain values). ``forward`` sees the
arrays inside the Tensors; ``backward`` returns one gradient per positional input (None
for inputs that are not Tensors or need no gradient). A gradient may have the shape of the
broadcast output: the engine sums it back to the input's shape (see `unbroadcast`).
"""
from __future__ import annotations

import itertools
import threading

import numpy as np

_grad_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_grad_state, "enabled", True)


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


class Function:
    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        from .tensor import Tensor

        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = any(needs) and is_grad_enabled()
        ctx = Context(needs)
        out = Tensor._from_array(cls.forward(ctx, *raw, **kwargs), requires_grad=record)
        if record:
            parents = tuple(a if isinstance(a, Tensor) and a.requires_grad else None for a in args)
            out._node = Node(cls, ctx, parents)
        return out
