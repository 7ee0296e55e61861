"""Elementwise ops and activations: pow, exp, log, sqrt, relu, sigmoid, tanh, log_softmax.

Each `Function` keeps its forward and backward together. Results keep the input dtype:
NumPy 2 treats Python scalars as "weak", so ``float32_array ** 2.0`` stays float32; NumPy
scalars (np.float64(2.0)) are not weak, so they are turned into Python numbers first.
Backward saves the forward's output where the derivative is cheapest from it (exp,
sqrt, sigmoid, tanh, log_softmax), so no work is repeated.
"""
from __future__ import annotations

import numpy as np

from .function import Function
from .workspace import recycled, scratch, zeros as kept_zeros
from .tensor import Tensor


def _as_tensor(x):
    """Tensors pass through; arrays and numbers become constant Tensors (numbers float32)."""
    return x if isinstance(x, Tensor) else Tensor(x)


def _python_scalar(x):
    """np.float64(2.0) or a 0-d array -> 2.0, so it cannot upcast a float32 tensor."""
    if isinstance(x, (np.generic, np.ndarray)) and np.ndim(x) == 0:
        return x.item()
    return x


# ---- powers, exp, log ------------------------------------------------------------------
class PowScalar(Function):
    """``a ** p`` for a constant number p: d/da = p * a ** (p - 1) (0 where p == 0)."""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a)
        ctx.p = p
        return a ** p

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        p = ctx.p
        if p == 0:
            return np.zeros_like(grad), None
        if p == 2:
            return grad * (2 * a), None
        if p == 1:
            return grad, None
        return grad * (p * a ** (p - 1)), None


class Pow(Function):
    """``a ** b`` for two arrays (broadcast). As PyTorch: d/da is 0 where b == 0, and
    d/db = a ** b * log(a) is 0 where a == 0 and b >= 0 (NaN for negative a)."""

    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved_tensors
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if ctx.needs_input_grad[0]:
                ga = np.where(b == 0, 0, grad * b * a ** (b - 1))
            if ctx.needs_input_grad[1]:
                gb = np.where((a == 0) & (b >= 0), 0, grad * out * np.log(a))
        return ga, gb


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.saved_tensors[0]


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad / (2 * ctx.saved_tensors[0])


# ---- activations -------------------------------------------------------------------------
# Below this many elements a kept array (ReLU's zeros, a recycled output) costs more to
# look up than a fresh one costs to make.
SMALL = 4096


class ReLUFn(Function):
    @staticmethod
    def forward(ctx, a):
        # against an array of zeros NumPy runs its SIMD loop: 0.4-0.55x the time of
        # np.maximum(a, 0) with the scalar (same values)
        if a.size < SMALL:
            out = np.maximum(a, 0)
        else:
            out = np.maximum(a, kept_zeros(a.shape, a.dtype), out=recycled(a.shape, a.dtype))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        # PyTorch's threshold_backward: 0 where out <= 0 (so at a == 0), the gradient
        # itself elsewhere, NaN inputs included. out = max(a, 0) is >= 0 or NaN, so
        # "not out <= 0" is "out != 0": one pass instead of a compare and a negation
        keep = np.not_equal(ctx.saved_tensors[0], 0, out=scratch("relu.keep", grad.shape, bool))
        if grad.size < SMALL:
            return grad * keep
        return np.multiply(grad, keep, out=recycled(grad.shape, np.result_type(grad, keep)))


class SigmoidFn(Function):
    @staticmethod
    def forward(ctx, a):
        # exp(-|a|) never overflows: sigmoid = 1/(1+e) for a >= 0 and e/(1+e) below.
        e = np.empty_like(a)  # out= buffers: ufuncs return scalars for 0-d inputs
        np.abs(a, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        out = np.where(a >= 0, 1, e)
        e += 1
        out /= e
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved_tensors[0]
        return grad * (out * (1 - out))


class TanhFn(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved_tensors[0]
        return grad * (1 - out * out)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, a, axis=-1):
        shifted = a - a.max(axis=axis, keepdims=True)  # largest exponent is exp(0): no overflow
        out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved_tensors[0]
        return grad - np.exp(out) * grad.sum(axis=ctx.axis, keepdims=True)


# ---- public functions -------------------------------------------------------------------
def power(a, exponent):
    r"""``a ** exponent``, elementwise.

    .. math:: \text{out}_i = a_i^{p_i}

    `exponent` is a number (then only `a` is differentiated: ``p * a ** (p - 1)``, 0 where
    p == 0) or a Tensor/array broadcast against `a` (then a Tensor exponent gets
    ``a ** p * log(a)``, defined as 0 where a == 0 and p >= 0, as PyTorch). A number
    exponent keeps `a`'s dtype (float32 stays float32).

    Shape:
        - Output: the broadcast shape of `a` and `exponent`.
    """
    exponent = _python_scalar(exponent)
    if isinstance(exponent, (int, float)):
        return PowScalar.apply(_as_tensor(a), exponent)
    if not isinstance(exponent, Tensor):
        like = a.dtype if isinstance(a, Tensor) else None
        exponent = Tensor._from_array(np.asarray(exponent, dtype=like))
    if not isinstance(a, Tensor):
        a = Tensor._from_array(np.asarray(_python_scalar(a), dtype=exponent.dtype))
    return Pow.apply(a, exponent)


def exp(a):
    r"""``exp(a)`` elementwise; gradient ``grad * exp(a)``. Shape: output as input."""
    return Exp.apply(_as_tensor(a))


def log(a):
    r"""Natural logarithm elementwise; gradient ``grad / a``. Shape: output as input.
    Non-positive entries give -inf/NaN, as in NumPy and PyTorch."""
    return Log.apply(_as_tensor(a))


def sqrt(a):
    r"""Square root elementwise; gradient ``grad / (2 sqrt(a))`` (inf at 0, as PyTorch).
    Shape: output as input."""
    return Sqrt.apply(_as_tensor(a))


def relu(a):
    r"""``max(a, 0)`` elementwise; the gradient at exactly 0 is 0, as PyTorch.
    Shape: output as input."""
    return ReLUFn.apply(_as_tensor(a))


def sigmoid(a):
    r"""Logistic function elementwise, stable for any |a| (no overflow warnings, and
    sigmoid(-40) keeps its relative precision).

    .. math:: \sigma(a) = \frac{1}{1 + e^{-a}}, \quad \sigma'(a) = \sigma(a)(1 - \sigma(a))

    Shape: output as input.
    """
    return SigmoidFn.apply(_as_tensor(a))


def tanh(a):
    r"""Hyperbolic tangent elementwise; gradient ``grad * (1 - tanh(a)**2)``.
    Shape: output as input."""
    return TanhFn.apply(_as_tensor(a))


def log_softmax(a, axis=-1):
    r"""Log of the softmax along `axis`, computed from ``a - max(a)`` so that no
    exponent overflows.

    .. math:: \text{out}_i = a_i - \max_j a_j - \log \sum_j e^{a_j - \max_k a_k}

    Gradient: ``grad - softmax(a) * grad.sum(axis)``.

    Shape:
        - Input: any shape, `axis` (negative counts from the end) inside it.
        - Output: same shape as the input.
    """
    a = _as_tensor(a)
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"log_softmax: axis {axis} is out of range for a {a.ndim}-D input "
                         f"of shape {a.shape}; use an axis in [{-a.ndim}, {a.ndim - 1}]")
    return LogSoftmax.apply(a, axis=axis)
