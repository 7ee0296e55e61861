"""The losses of ``minidist.nn.functional`` (re-exported there): cross_entropy, nll_loss
and mse_loss, with PyTorch's argument checks, each calling one fused Function of loss_ops."""
from __future__ import annotations

import numpy as np

from ..autograd import ops
from ..autograd.tensor import Tensor
from .argcheck import array_of as _array, check_reduction, shape_of as _shape
from .loss_ops import CrossEntropy, MSELossFn, NLLLoss


# ---- losses -------------------------------------------------------------------------------
def _class_targets(fn, logits_shape, target):
    """Check integer class-index targets of shape (N, *) against (N, C, *) scores; return
    them flattened to (N * prod(*),)."""
    target = np.asarray(_array(target))
    if target.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices (got dtype {target.dtype}); "
                        "cast with .astype(np.int64)")
    expected = logits_shape[:1] + logits_shape[2:]
    if target.shape != expected:
        raise ValueError(f"{fn}: target shape {target.shape} does not match input shape {logits_shape} "
                         f"(expected target shape {expected})")
    return target.reshape(-1)


def _check_class_range(fn, target, num_classes, ignore_index):
    if target.size == 0 or (target.min() >= 0 and target.max() < num_classes):
        return  # the common case, in two cheap reductions
    bad = (target < 0) | (target >= num_classes)
    bad &= target != ignore_index
    if bad.any():
        value = int(target[np.argmax(bad)])
        raise IndexError(f"{fn}: target value {value} is out of bounds for {num_classes} classes "
                         f"(class indices must be in [0, {num_classes - 1}])")


def _scores_2d(fn, x, target, ignore_index):
    """(N, C, *) scores and (N, *) targets -> (M, C) scores, (M,) targets, and a function
    that reshapes per-element losses back to (N, *)."""
    xs = _shape(x)
    if len(xs) == 0:
        raise ValueError(f"{fn}: expected input of shape (C,), (N, C) or (N, C, *) (got a 0D input)")
    if len(xs) == 1:  # unbatched (C,) as PyTorch
        xs2, target = (1, xs[0]), np.asarray(_array(target))
        if target.shape != ():
            raise ValueError(f"{fn}: an unbatched input of shape {xs} needs a 0D target (got shape {target.shape})")
        t = _class_targets(fn, xs2, target.reshape(1))
        _check_class_range(fn, t, xs[0], ignore_index)
        return ops.reshape(x, xs2), t, lambda loss: ops.reshape(loss, ())
    t = _class_targets(fn, xs, target)
    _check_class_range(fn, t, xs[1], ignore_index)
    if len(xs) == 2:
        return x, t, lambda loss: loss
    # move the class axis last, then fold every other axis into the rows
    perm = (0,) + tuple(range(2, len(xs))) + (1,)
    moved = ops.reshape(ops.transpose(x, perm), (-1, xs[1]))
    return moved, t, lambda loss: ops.reshape(loss, xs[:1] + xs[2:])


def cross_entropy(input, target, reduction="mean", ignore_index=-100):
    r"""Cross-entropy of unnormalised scores against class indices (PyTorch's, without
    class weights or label smoothing).

    .. math:: \ell_n = \log \sum_c \exp(x_{n,c}) - x_{n, y_n}

    computed with the row maximum subtracted first. ``"mean"`` averages over the targets
    that are not `ignore_index`.

    Shape:
        - input: ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``; target: ``()``, ``(N,)`` or
          ``(N, d1, ...)`` integer class indices in ``[0, C)``
        - Output: scalar, or the target's shape with ``reduction="none"``
    """
    check_reduction(reduction, "cross_entropy")
    scores, t, unflatten = _scores_2d("cross_entropy", input, target, ignore_index)
    loss = CrossEntropy.apply(scores, t, reduction=reduction, ignore_index=ignore_index)
    return unflatten(loss) if reduction == "none" else loss


def nll_loss(input, target, reduction="mean", ignore_index=-100):
    r"""Negative log-likelihood of log-probabilities: :math:`\ell_n = -x_{n, y_n}`.

    Shape: as `cross_entropy`.
    """
    check_reduction(reduction, "nll_loss")
    scores, t, unflatten = _scores_2d("nll_loss", input, target, ignore_index)
    loss = NLLLoss.apply(scores, t, reduction=reduction, ignore_index=ignore_index)
    return unflatten(loss) if reduction == "none" else loss


def mse_loss(input, target, reduction="mean"):
    r"""Mean squared error :math:`\ell = \mathrm{reduce}((x - y)^2)`.

    Shape:
        - input and target: the same shape (no broadcasting: a mismatch is an error)
        - Output: scalar, or the input's shape with ``reduction="none"``
    """
    check_reduction(reduction, "mse_loss")
    if _shape(input) != _shape(target):
        raise ValueError(f"mse_loss: input shape {_shape(input)} and target shape {_shape(target)} differ; "
                         "reshape the target to the input's shape")
    if not isinstance(target, Tensor):  # a plain array target follows the input's dtype
        target = np.asarray(target, dtype=_array(input).dtype)
    return MSELossFn.apply(input, target, reduction=reduction)
