"""Fused losses and dropout: each forward beside its analytic backward.

Losses take ``reduction`` in ``"mean" | "sum" | "none"`` as PyTorch; the targets are
plain arrays (class indices, or values for MSE) and get no gradient unless they are
Tensors that require one (MSE only).
"""
from __future__ import annotations

import numpy as np

from ..autograd.function import Function


def _reduce(losses, reduction, count):
    """Apply `reduction` to per-element losses; `count` is the mean's denominator."""
    if reduction == "none":
        return losses
    total = losses.sum()
    return np.asarray(total / count if reduction == "mean" else total, dtype=losses.dtype)


def _expand_grad(grad, reduction, count, dtype):
    """d(loss)/d(per-element loss): the upstream gradient, spread back over the elements."""
    if reduction == "none":
        return grad
    scale = grad / count if reduction == "mean" else grad
    return np.asarray(scale, dtype=dtype)


def _row_max(x):
    """``x.max(axis=1, keepdims=True)`` of (N, C) scores. With under 64 classes and 32 rows
    or more, the max of the class-major copy: NumPy reduces each short row in its own
    inner-loop call, one long row per class in a vectorised pass (256 x 10 float32: 12.1
    us row-wise, 2.9 us copy and max; min of repeats). A max is exact: the same values."""
    n, c = x.shape
    if c >= 64 or n < 32:
        return x.max(axis=1, keepdims=True)
    return np.ascontiguousarray(x.T).max(axis=0)[:, None]


class CrossEntropy(Function):
    """``loss_i = logsumexp(logits_i) - logits_i[target_i]`` over the class axis 1.

    Stable: the row maximum is subtracted before exponentiating. Backward is
    ``softmax(logits) - onehot(target)``, times the upstream gradient; rows whose target
    equals `ignore_index` contribute nothing and are left out of the mean's count.

    ``forward(ctx, logits, target, reduction, ignore_index)``; logits (N, C), target (N,)
    int (callers move any extra axes of (N, C, d1, ...) into N first).
    """

    @staticmethod
    def forward(ctx, logits, target, reduction, ignore_index):
        shifted = logits - _row_max(logits)
        exp = np.exp(shifted)
        sumexp = exp.sum(axis=1, keepdims=True)
        keep = target != ignore_index
        count = np.count_nonzero(keep)
        if count == len(target):
            keep = None  # the common case: no row ignored, no masking
        # saved for backward: a copy, never the caller's array (a loader may refill it)
        safe_target = target.copy() if keep is None else np.where(keep, target, 0)
        losses = np.log(sumexp[:, 0]) - shifted[np.arange(len(target)), safe_target]
        if keep is not None:
            losses = np.where(keep, losses, 0).astype(logits.dtype, copy=False)
        ctx.save_for_backward(exp, sumexp, safe_target, keep)
        ctx.reduction, ctx.count = reduction, count
        # mean over zero kept rows is nan, as PyTorch
        return _reduce(losses, reduction, count if count else np.nan)

    @staticmethod
    def backward(ctx, grad):
        exp, sumexp, target, keep = ctx.saved_tensors
        dlogits = exp / sumexp  # softmax, written into a fresh array
        dlogits[np.arange(len(target)), target] -= 1
        # every target ignored: the loss is nan for "mean" but the gradient is zero, as PyTorch
        scale = _expand_grad(grad, ctx.reduction, ctx.count or 1, dlogits.dtype)
        if keep is not None:
            scale = scale * keep  # ignored rows get zero
        dlogits *= scale[:, None] if scale.ndim else scale  # per row ("none"), or one number
        return dlogits, None


class NLLLoss(Function):
    """``loss_i = -logp_i[target_i]``: negative log-likelihood of log-probabilities (N, C).

    ``forward(ctx, logp, target, reduction, ignore_index)``; backward writes the upstream
    gradient, negated, at each target entry.
    """

    @staticmethod
    def forward(ctx, logp, target, reduction, ignore_index):
        keep = target != ignore_index
        safe_target = np.where(keep, target, 0)
        picked = logp[np.arange(len(target)), safe_target]
        losses = np.where(keep, -picked, 0)  # not `* keep`: an ignored row's -inf would give nan
        count = int(keep.sum())
        ctx.save_for_backward(safe_target, keep)
        ctx.shape, ctx.reduction, ctx.count = logp.shape, reduction, count
        return _reduce(losses.astype(logp.dtype, copy=False), reduction, count if count else np.nan)

    @staticmethod
    def backward(ctx, grad):
        target, keep = ctx.saved_tensors
        scale = _expand_grad(grad, ctx.reduction, ctx.count or 1, grad.dtype)  # all ignored: zeros
        dlogp = np.zeros(ctx.shape, dtype=grad.dtype)
        dlogp[np.arange(len(target)), target] = -scale * keep
        return dlogp, None


class MSELossFn(Function):
    """``loss = reduce((input - target) ** 2)``; same shapes required.

    ``forward(ctx, input, target, reduction)``; the target gets the negated gradient when
    it requires one.
    """

    @staticmethod
    def forward(ctx, input, target, reduction):
        diff = input - target
        ctx.save_for_backward(diff)
        ctx.reduction = reduction
        return _reduce(diff * diff, reduction, diff.size)

    @staticmethod
    def backward(ctx, grad):
        (diff,) = ctx.saved_tensors
        dinput = diff * (2 * _expand_grad(grad, ctx.reduction, diff.size, diff.dtype))
        return (dinput if ctx.needs_input_grad[0] else None,
                -dinput if ctx.needs_input_grad[1] else None)


class DropoutFn(Function):
    """``y = x * mask``, with `mask` already holding 0 or ``1 / (1 - p)`` per element.

    ``forward(ctx, x, mask)``; backward is ``grad * mask``.
    """

    @staticmethod
    def forward(ctx, x, mask):
        ctx.mask = mask
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.mask, None


def dropout_mask(shape, p, rng, dtype):
    """Keep each element with probability ``1 - p`` (scaled by ``1 / (1 - p)``), else 0."""
    if p >= 1.0:
        return np.zeros(shape, dtype=dtype)
    draw_dtype = dtype if dtype in (np.float32, np.float64) else np.float64
    keep = rng.random(shape, dtype=draw_dtype) >= p
    return keep.astype(dtype) * np.asarray(1.0 / (1.0 - p), dtype=dtype)
