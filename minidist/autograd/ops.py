"""Differentiable ops: each `Function` holds its forward and its backward together.

The functions at the bottom are the public entry points (``ops.add(a, b)``); they accept
Tensors, NumPy arrays and Python numbers. Backward returns gradients shaped like the
broadcast output; the engine sums them back to each input's shape. The elementwise ops
and activations live in elementwise.py, the shape and indexing ops in shape_ops.py; both
are re-exported here (``ops.relu``, ``ops.reshape``).
"""
from __future__ import annotations

import numpy as np

from .elementwise import (  # noqa: F401  (re-exported: ops.exp, ops.relu, ...)
    Exp, Log, LogSoftmax, Pow, PowScalar, ReLUFn, SigmoidFn, Sqrt, TanhFn,
    exp, log, log_softmax, power, relu, sigmoid, sqrt, tanh,
)
from .function import Function
from .shape_ops import (  # noqa: F401  (re-exported: ops.reshape, ops.getitem, ...)
    Concatenate, GetItem, Reshape, Stack, Transpose, _lift, concatenate, getitem, reshape, stack, transpose,
)
from .tensor import Tensor


def _pair(a, b):
    if not isinstance(a, Tensor):
        a = _lift(a, b)
    if not isinstance(b, Tensor):
        b = _lift(b, a)
    return a, b


# ---- arithmetic -----------------------------------------------------------------------
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return grad, -grad


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return (grad * b if ctx.needs_input_grad[0] else None,
                grad * a if ctx.needs_input_grad[1] else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return (grad / b if ctx.needs_input_grad[0] else None,
                -grad * a / (b * b) if ctx.needs_input_grad[1] else None)


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


class MatMul(Function):
    """``a @ b`` with NumPy's rules: 1-D operands are lifted to a row (a) or a column (b)
    and the lifted axis is dropped from the result; leading batch axes broadcast."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        a_vec, b_vec = a.ndim == 1, b.ndim == 1
        if a_vec or b_vec:  # put back the axes forward dropped: (..., n, m) again
            a = a[None, :] if a_vec else a
            b = b[:, None] if b_vec else b
            grad = np.expand_dims(grad, -1) if b_vec else grad
            grad = np.expand_dims(grad, -2) if a_vec else grad
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = grad @ np.swapaxes(b, -1, -2)
            ga = ga[..., 0, :] if a_vec else ga  # batch axes, if any, summed by the engine
        if ctx.needs_input_grad[1]:
            gb = np.swapaxes(a, -1, -2) @ grad
            gb = gb[..., 0] if b_vec else gb
        return ga, gb


# ---- reductions ---------------------------------------------------------------------------
def _expand_reduced(grad, shape, axis, keepdims):
    """Broadcastable view of a reduction's gradient against the input `shape`."""
    if axis is not None and not keepdims:
        axes = (axis,) if np.isscalar(axis) else tuple(axis)
        grad = np.expand_dims(grad, tuple(a % len(shape) for a in axes))
    return np.broadcast_to(grad, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        out = np.asarray(a.mean(axis=axis, keepdims=keepdims))
        ctx.count = a.size // out.size if out.size else 1  # (`max` is shadowed here)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims) / ctx.count


class Max(Function):
    """Largest entry over `axis`; the gradient is split evenly among tied maxima, as
    ``torch.amax`` does (not sent to one index, as ``torch.max(dim)`` does)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        top = a.max(axis=axis, keepdims=True)
        ctx.save_for_backward(a, top)
        ctx.axis = axis
        return top if keepdims else np.squeeze(top, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        a, top = ctx.saved_tensors
        winners = a == top
        ties = winners.sum(axis=ctx.axis, keepdims=True, dtype=grad.dtype)
        return winners * (grad.reshape(top.shape) / ties)


# ---- public functions -------------------------------------------------------------------
def add(a, b):
    """``a + b`` with broadcasting; numbers take the tensor's dtype."""
    return Add.apply(*_pair(a, b))


def sub(a, b):
    """``a - b`` with broadcasting; numbers take the tensor's dtype."""
    return Sub.apply(*_pair(a, b))


def mul(a, b):
    """``a * b`` with broadcasting; numbers take the tensor's dtype."""
    return Mul.apply(*_pair(a, b))


def div(a, b):
    """``a / b`` with broadcasting; numbers take the tensor's dtype."""
    return Div.apply(*_pair(a, b))


def neg(a):
    """``-a``."""
    return Neg.apply(a)


def matmul(a, b):
    """``a @ b`` as ``np.matmul``: (n, k) @ (k, m) -> (n, m); 1-D operands are vectors;
    leading batch axes broadcast, (..., n, k) @ (..., k, m) -> (..., n, m)."""
    return MatMul.apply(*_pair(a, b))


def reduce_sum(a, axis=None, keepdims=False):
    """Sum over `axis` (int, tuple of ints, or None for all); keepdims as NumPy."""
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def mean(a, axis=None, keepdims=False):
    """Mean over `axis` (int, tuple of ints, or None for all); keepdims as NumPy."""
    return Mean.apply(a, axis=axis, keepdims=keepdims)


def reduce_max(a, axis=None, keepdims=False):
    r"""Largest entry over `axis` (int, tuple of ints, or None for all), as ``torch.amax``.

    The gradient goes to the maximal entries, split evenly among ties:
    ``grad * (a == max) / count(a == max)``.

    Shape:
        - Output: the input's shape without the reduced axes (kept as 1 with keepdims).
    """
    a = a if isinstance(a, Tensor) else Tensor(a)
    if a.size == 0:
        raise ValueError(f"max of an empty tensor (shape {a.shape}) is undefined")
    return Max.apply(a, axis=axis, keepdims=keepdims)
