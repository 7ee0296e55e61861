"""Differentiable ops: each `Function` holds its forward and its backward together.

The functions at the bottom are the public entry points (``ops.add(a, b)``); they accept
Tensors, NumPy arrays and Python numbers. Backward returns gradients shaped like the
broadcast output; the engine sums them back to each input's shape.
"""
from __future__ import annotations

import numpy as np

from .function import Function
from .tensor import Tensor


def _lift(x, like):
    """Python numbers and arrays become constant Tensors of `like`'s dtype (so 2.0 * x
    stays float32)."""
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if isinstance(like, Tensor) else None
    return Tensor._from_array(np.asarray(x, dtype=dtype))


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
    """``a @ b`` for 2-D operands and batched (..., n, k) @ (..., k, m)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        if a.ndim == 1 or b.ndim == 1:  # vector cases: lift to matrices, then squeeze
            a2 = a[None, :] if a.ndim == 1 else a
            b2 = b[:, None] if b.ndim == 1 else b
            g2 = grad.reshape(a2.shape[:-1] + b2.shape[-1:])
            ga = (g2 @ np.swapaxes(b2, -1, -2)).reshape(a.shape) if a.ndim == 1 else g2 @ np.swapaxes(b2, -1, -2)
            gb = (np.swapaxes(a2, -1, -2) @ g2).reshape(b.shape) if b.ndim == 1 else np.swapaxes(a2, -1, -2) @ g2
            return ga, gb
        return (grad @ np.swapaxes(b, -1, -2) if ctx.needs_input_grad[0] else None,
                np.swapaxes(a, -1, -2) @ grad if ctx.needs_input_grad[1] else None)


# ---- reductions and shape -----------------------------------------------------------------
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
        return np.asarray(a.sum(axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        out = np.asarray(a.mean(axis=axis, keepdims=keepdims))
        ctx.count = a.size // max(out.size, 1) if a.size else 1
        return out

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims) / ctx.count


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes=None):
        ctx.axes = axes
        return np.transpose(a, axes)

    @staticmethod
    def backward(ctx, grad):
        inverse = None if ctx.axes is None else tuple(np.argsort(ctx.axes))
        return np.transpose(grad, inverse)


# ---- public functions -------------------------------------------------------------------
def add(a, b):
    return Add.apply(*_pair(a, b))


def sub(a, b):
    return Sub.apply(*_pair(a, b))


def mul(a, b):
    return Mul.apply(*_pair(a, b))


def div(a, b):
    return Div.apply(*_pair(a, b))


def neg(a):
    return Neg.apply(a)


def matmul(a, b):
    return MatMul.apply(*_pair(a, b))


def sum(a, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy's name
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def mean(a, axis=None, keepdims=False):
    return Mean.apply(a, axis=axis, keepdims=keepdims)


def reshape(a, shape):
    return Reshape.apply(a, tuple(shape) if not isinstance(shape, int) else (shape,))


def transpose(a, axes=None):
    return Transpose.apply(a, None if axes is None else tuple(axes))
