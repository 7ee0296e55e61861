"""Fused batch and layer normalisation: each forward beside its analytic backward.

Batch norm is split the way PyTorch splits it for ``SyncBatchNorm``, so the distributed
version (minidist/nn/syncbn.py) reuses exactly this arithmetic with sums that were
all-reduced across ranks. One rank's training step is::

    s, ss, n = batch_norm_stats(x)                  # local per-channel sums  (all-reduce these)
    mean, invstd = batch_norm_gather_stats(s, ss, n, running_mean, running_var, momentum, eps)
    y = batch_norm_elemt(x, mean, invstd, weight, bias)
    # backward, with dy = dL/dy:
    sum_dy, sum_dy_xmu, dweight, dbias = batch_norm_backward_reduce(dy, x, mean, invstd)
    #                                   (all-reduce sum_dy and sum_dy_xmu, with the same n)
    dx = batch_norm_backward_elemt(dy, x, mean, invstd, weight, sum_dy, sum_dy_xmu, n)

All per-channel arrays are 1-D of length C; ``x`` is (N, C) or (N, C, *).
"""
from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from ..autograd.workspace import recycled, scratch


def _channel_axes(x):
    """The axes batch norm reduces over: all but the channel axis 1."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    """A (C,) array laid out to broadcast against x (N, C, *): (1, C, *), each channel's
    value repeated over the spatial positions. Broadcast over N only, an op on x runs one
    contiguous loop per sample; against (1, C, 1, ...) NumPy buffers and copies the
    broadcast value for every short row (1.3-1.5x slower on (64, 8, 28, 28))."""
    return np.repeat(v, int(np.prod(x.shape[2:]))).reshape((1,) + x.shape[1:])


def _channels_flat(a):
    """(N, C, *) -> (N, C, prod(*)), a view when a is contiguous."""
    return a.reshape(a.shape[:2] + (int(np.prod(a.shape[2:])),))  # explicit: -1 is ambiguous when N = 0


def _channel_sum(a):
    """Per-channel ``sum(a)`` over every axis but 1 (einsum: a third of ``sum(axis=...)``'s time)."""
    return a.sum(axis=0) if a.ndim == 2 else np.einsum("ijk->j", _channels_flat(a))


def _channel_dot(a, b):
    """Per-channel ``sum(a * b)`` over every axis but 1, without the product temporary."""
    if a.ndim == 2:
        return np.einsum("ij,ij->j", a, b)
    a3, b3 = _channels_flat(a), _channels_flat(b)  # one BLAS dot per (n, c) row: 0.6x einsum's time
    return np.matmul(a3[:, :, None, :], b3[:, :, :, None]).sum(axis=(0, 2, 3))


def check_values_per_channel(xs) -> None:
    """Training-mode batch norm needs more than one value per channel (an empty batch is
    allowed: it normalises nothing and keeps the running statistics, as PyTorch)."""
    if xs[0] * int(np.prod(xs[2:])) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {xs}; "
                         "use a batch of 2 or more samples, or eval mode")


# ---- the SyncBatchNorm-shaped pieces --------------------------------------------------------
def batch_norm_stats(x):
    """Per-channel ``(sum, sum of squares, count)`` of ``x`` over every axis but 1.

    The sums are accumulated and returned in float64: the variance is later formed as
    ``sumsq / n - mean**2``, which cancels badly in float32. ``count`` is the Python int
    ``x.size // C``.
    """
    axes = _channel_axes(x)
    x64 = x.astype(np.float64, copy=False)
    return x64.sum(axis=axes), np.square(x64).sum(axis=axes), x.size // x.shape[1]


def batch_norm_gather_stats(sum_x, sum_x2, count, running_mean=None, running_var=None,
                            momentum=0.1, eps=1e-5, dtype=None):
    """Turn (globally summed) per-channel sums into ``(mean, invstd)`` and, when running
    buffers are given, update them IN PLACE::

        mean = sum_x / count,   var = sum_x2 / count - mean**2        (biased)
        invstd = 1 / sqrt(var + eps)
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * count / (count - 1)

    `dtype` (default: the running buffers' dtype, else float64) is the dtype of the
    returned mean and invstd.
    """
    if count <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got {count} value(s) "
                         "per channel; use a larger batch (or eval mode)")
    mean = sum_x / count
    var = np.maximum(sum_x2 / count - mean * mean, 0.0)  # round-off can dip below zero
    update_running_stats(running_mean, running_var, mean, var, count, momentum)
    if dtype is None:
        dtype = running_mean.dtype if running_mean is not None else np.float64
    return mean.astype(dtype, copy=False), (1.0 / np.sqrt(var + eps)).astype(dtype, copy=False)


def update_running_stats(running_mean, running_var, mean, var, count, momentum):
    """PyTorch's exponential moving average, in place; running_var gets the unbiased var."""
    if running_mean is not None:
        running_mean *= 1.0 - momentum
        running_mean += (momentum * mean).astype(running_mean.dtype, copy=False)
    if running_var is not None:
        running_var *= 1.0 - momentum
        running_var += (momentum * var * (count / (count - 1))).astype(running_var.dtype, copy=False)


def batch_norm_elemt(x, mean, invstd, weight=None, bias=None):
    """``y = (x - mean) * invstd * weight + bias`` per channel, in x's dtype."""
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    out = x * _per_channel(scale.astype(x.dtype, copy=False), x)
    out += _per_channel(shift.astype(x.dtype, copy=False), x)  # in place: one big array, not two
    return out


def batch_norm_backward_reduce(dy, x, mean, invstd):
    """Per-channel ``(sum_dy, sum_dy_xmu, dweight, dbias)`` of this rank's data::

        sum_dy = sum(dy),   sum_dy_xmu = sum(dy * (x - mean)),
        dweight = sum_dy_xmu * invstd,   dbias = sum_dy
    """
    sum_dy = _channel_sum(dy)
    xmu = x - _per_channel(mean.astype(x.dtype, copy=False), x)
    sum_dy_xmu = _channel_dot(dy, xmu)
    return sum_dy, sum_dy_xmu, sum_dy_xmu * invstd.astype(x.dtype, copy=False), sum_dy


def batch_norm_backward_elemt(dy, x, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    """The input gradient of training-mode batch norm from (global) per-channel sums::

        dx = (dy - sum_dy / n - (x - mean) * invstd**2 * sum_dy_xmu / n) * invstd * weight
    """
    xmu = x - _per_channel(np.asarray(mean).astype(x.dtype, copy=False), x)
    return _input_grad(dy, xmu, invstd, weight, sum_dy, sum_dy_xmu, count)


def _input_grad(dy, xmu, invstd, weight, sum_dy, sum_dy_xmu, count):
    """`batch_norm_backward_elemt` given ``xmu = x - mean`` (centred first: no
    cancellation between x and mean in float32), which it overwrites: both callers
    hand over a buffer of their own, and one less array of x's size stays in cache."""
    dtype = xmu.dtype
    invstd = invstd.astype(dtype, copy=False)
    scale = invstd if weight is None else invstd * weight.astype(dtype, copy=False)
    mean_dy = (sum_dy / count).astype(dtype, copy=False)
    proj = (sum_dy_xmu / count).astype(dtype, copy=False) * invstd * invstd
    dx = recycled(dy.shape, np.result_type(dy, scale))  # built in place: one big array, not four
    np.multiply(dy, _per_channel(scale, xmu), out=dx)
    dx -= _per_channel(mean_dy * scale, xmu)
    dx -= np.multiply(xmu, _per_channel(proj * scale, xmu), out=xmu)
    return dx


# ---- the Functions ----------------------------------------------------------------------------
class BatchNorm(Function):
    """Training-mode batch norm over axis 1: batch statistics, running buffers updated.

    ``forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps)``; weight and
    bias may be None (affine=False), the running buffers may be None (not tracked).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        count = x.size // x.shape[1]
        # an empty batch (N = 0) normalises nothing and leaves the running stats, as PyTorch
        mean = _channel_sum(x) / max(count, 1)
        out = np.subtract(x, _per_channel(mean, x), out=recycled(x.shape, np.result_type(x, mean)))
        # out = x - mean, scaled in place below
        var = _channel_dot(out, out) / max(count, 1)
        invstd = 1.0 / np.sqrt(var + np.asarray(eps, dtype=x.dtype))
        if count:
            update_running_stats(running_mean, running_var, mean, var, count, momentum)
        ctx.save_for_backward(x, mean, weight, invstd)  # x, not x - mean: no second big array
        ctx.count = max(count, 1)
        out *= _per_channel(invstd if weight is None else invstd * weight, x)
        if bias is not None:
            out += _per_channel(bias, x)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, mean, weight, invstd = ctx.saved_tensors
        xmu = np.subtract(x, _per_channel(mean, x), out=scratch("batchnorm.xmu", x.shape, x.dtype))
        sum_dy = _channel_sum(grad)
        sum_dy_xmu = _channel_dot(grad, xmu)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = _input_grad(grad, xmu, invstd, weight, sum_dy, sum_dy_xmu, ctx.count) if need_x else None
        dweight = sum_dy_xmu * invstd if need_w else None
        return dx, dweight, sum_dy if need_b else None, None, None, None, None


class BatchNormEval(Function):
    """Eval-mode batch norm: a fixed per-channel affine map from the running statistics,
    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps):
        mean = running_mean.astype(x.dtype, copy=False)
        invstd = 1.0 / np.sqrt(running_var.astype(x.dtype, copy=False) + np.asarray(eps, dtype=x.dtype))
        ctx.save_for_backward(x, weight, mean, invstd)
        return batch_norm_elemt(x, mean, invstd, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, invstd = ctx.saved_tensors
        scale = invstd if weight is None else invstd * weight
        dx = grad * _per_channel(scale, x) if ctx.needs_input_grad[0] else None
        dweight = dbias = None
        if ctx.needs_input_grad[1]:
            _, _, dweight, _ = batch_norm_backward_reduce(grad, x, mean, invstd)
        if ctx.needs_input_grad[2]:
            dbias = _channel_sum(grad)
        return dx, dweight, dbias, None, None, None


class LayerNormFn(Function):
    """Layer norm over the last `ndim` axes (PyTorch's ``normalized_shape``)::

        y = (x - mean) / sqrt(var + eps) * weight + bias     (biased var, per sample)

    ``forward(ctx, x, weight, bias, ndim, eps)``; weight/bias have the normalised shape
    or are None.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, ndim, eps):
        axes = tuple(range(x.ndim - ndim, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        xmu = x - mean
        var = np.square(xmu).mean(axis=axes, keepdims=True)
        invstd = 1.0 / np.sqrt(var + np.asarray(eps, dtype=x.dtype))
        xhat = xmu * invstd
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.axes = axes
        out = xhat if weight is None else xhat * weight
        return out if bias is None else out + bias

    @staticmethod
    def backward(ctx, grad):
        xhat, invstd, weight = ctx.saved_tensors
        axes = ctx.axes
        lead = tuple(range(xhat.ndim - len(axes)))  # the batch axes params are shared over
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            dxhat = grad if weight is None else grad * weight
            # dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
            dx = invstd * (dxhat - dxhat.mean(axis=axes, keepdims=True)
                           - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))
        if ctx.needs_input_grad[1]:
            dweight = (grad * xhat).sum(axis=lead)
        if ctx.needs_input_grad[2]:
            dbias = grad.sum(axis=lead)
        return dx, dweight, dbias, None, None
