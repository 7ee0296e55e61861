"""``minidist.nn.functional`` (``F``): the stateless neural-network functions.

Each takes Tensors (or NumPy arrays, treated as constants), checks its arguments the way
PyTorch does, and calls one fused `Function` (conv_ops, norm_ops, loss_ops, or `Linear`
below) whose backward is analytic. Outputs keep the input's dtype (float32 stays float32).
"""
from __future__ import annotations

import numpy as np

from ..autograd import ops
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from .argcheck import array_of as _array, check_reduction, shape_of as _shape  # noqa: F401
from .conv_ops import Conv2dFn, MaxPool2dFn, output_size, pair
from .functional_loss import cross_entropy, mse_loss, nll_loss  # noqa: F401
from .loss_ops import DropoutFn, dropout_mask
from .norm_ops import (BatchNorm, BatchNormEval, LayerNormFn, batch_norm_backward_elemt,  # noqa: F401
                       batch_norm_backward_reduce, batch_norm_elemt, batch_norm_gather_stats,
                       batch_norm_stats, check_values_per_channel)

__all__ = ["relu", "sigmoid", "tanh", "log_softmax", "linear", "conv2d", "max_pool2d",
           "batch_norm", "layer_norm", "dropout", "cross_entropy", "nll_loss", "mse_loss",
           "batch_norm_stats", "batch_norm_gather_stats", "batch_norm_elemt",
           "batch_norm_backward_reduce", "batch_norm_backward_elemt"]

# ---- activations (the autograd ops) -------------------------------------------------------
def relu(x):
    """``max(x, 0)`` elementwise; gradient 0 at x = 0 (as PyTorch)."""
    return ops.relu(x)


def sigmoid(x):
    """``1 / (1 + exp(-x))`` elementwise."""
    return ops.sigmoid(x)


def tanh(x):
    """``tanh(x)`` elementwise."""
    return ops.tanh(x)


def log_softmax(x, dim=-1):
    """``x - logsumexp(x, dim)``, computed stably."""
    return ops.log_softmax(x, dim)


# ---- linear -------------------------------------------------------------------------------
class LinearFn(Function):
    """``y = x @ weight.T + bias`` with x (*, in), weight (out, in), bias (out,) or None.

    Backward: ``dx = dy @ W``, ``dW = dy^T x``, ``db = sum(dy)`` over the leading axes.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        out = x @ weight.T
        if bias is not None:
            out += bias
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = grad @ weight if need_x else None  # (*, in), as x
        if grad.ndim != 2:  # (*, out): every leading axis is a batch axis
            grad, x = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        dweight = grad.T @ x if need_w else None
        dbias = grad.sum(axis=0) if need_b else None
        return dx, dweight, dbias


def linear(x, weight, bias=None):
    r"""Affine map :math:`y = x W^T + b`.

    Shape:
        - x: ``(*, in_features)``; weight: ``(out_features, in_features)``;
          bias: ``(out_features,)`` or None
        - Output: ``(*, out_features)``
    """
    ws, xs = _shape(weight), _shape(x)
    if len(ws) != 2:
        raise ValueError(f"linear: weight must be 2D (out_features, in_features) (got shape {ws})")
    if len(xs) < 1 or xs[-1] != ws[1]:
        raise ValueError(f"linear: input's last dimension must equal weight's in_features={ws[1]} "
                         f"(got input shape {xs}, weight shape {ws})")
    if bias is not None and _shape(bias) != (ws[0],):
        raise ValueError(f"linear: bias must have shape ({ws[0]},) (got {_shape(bias)})")
    return LinearFn.apply(x, weight, bias)


# ---- convolution and pooling ---------------------------------------------------------------
def conv2d(x, weight, bias=None, stride=1, padding=0):
    r"""2-D cross-correlation (PyTorch's ``conv2d``, no dilation or groups).

    .. math:: out[n, o, i, j] = b[o] + \sum_{c, p, q} x_{pad}[n, c, s_h i + p, s_w j + q]\, W[o, c, p, q]

    Shape:
        - x: ``(N, C, H, W)``; weight: ``(O, C, kh, kw)``; bias: ``(O,)`` or None
        - Output: ``(N, O, H_out, W_out)``, ``H_out = (H + 2 p_h - kh) // s_h + 1``

    `stride` (>= 1) and `padding` (>= 0, zeros) are ints or (h, w) pairs.
    """
    xs, ws = _shape(x), _shape(weight)
    if len(xs) != 4:
        raise ValueError(f"conv2d: expected 4D input (N, C, H, W) (got {len(xs)}D input of shape {xs}); "
                         "add a batch axis with x.reshape(1, *x.shape)")
    if len(ws) != 4:
        raise ValueError(f"conv2d: expected 4D weight (O, C, kh, kw) (got shape {ws})")
    if ws[1] != xs[1]:
        raise ValueError(f"conv2d: weight of shape {ws} expects {ws[1]} input channels, "
                         f"but the input of shape {xs} has {xs[1]}")
    if bias is not None and _shape(bias) != (ws[0],):
        raise ValueError(f"conv2d: bias must have shape ({ws[0]},) (got {_shape(bias)})")
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    if min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0 (got stride={stride}, padding={padding})")
    _check_output_size("conv2d", xs, ws[2:], stride, padding)
    return Conv2dFn.apply(x, weight, bias, stride=stride, padding=padding)


def _check_output_size(fn, xs, kernel, stride, padding):
    ho = output_size(xs[2], kernel[0], stride[0], padding[0])
    wo = output_size(xs[3], kernel[1], stride[1], padding[1])
    if ho < 1 or wo < 1:
        raise ValueError(f"{fn}: kernel {tuple(kernel)} does not fit the padded input: input {xs}, "
                         f"padding {padding} gives output size ({ho}, {wo}); use a smaller kernel or more padding")


def max_pool2d(x, kernel_size, stride=None, padding=0):
    r"""Max over each ``kernel_size`` window (PyTorch's ``max_pool2d``, no dilation).

    Padding is implicit -inf, at most half the kernel. On ties the gradient goes to the
    first maximum of the window (row-major); overlapping windows add their gradients.

    Shape:
        - x: ``(N, C, H, W)``
        - Output: ``(N, C, H_out, W_out)``, ``H_out = (H + 2 p_h - k_h) // s_h + 1``

    `stride` defaults to `kernel_size`.
    """
    xs = _shape(x)
    if len(xs) != 4:
        raise ValueError(f"max_pool2d: expected 4D input (N, C, H, W) (got {len(xs)}D input of shape {xs})")
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"max_pool2d: kernel_size and stride must be >= 1 and padding >= 0 "
                         f"(got kernel_size={kernel}, stride={stride}, padding={padding})")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"max_pool2d: pad should be at most half of kernel size, "
                         f"but got padding={padding} and kernel_size={kernel}")
    _check_output_size("max_pool2d", xs, kernel, stride, padding)
    return MaxPool2dFn.apply(x, kernel=kernel, stride=stride, padding=padding)


# ---- normalisation --------------------------------------------------------------------------
def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    r"""Batch normalisation over axis 1 (PyTorch's ``F.batch_norm``).

    .. math:: y = \frac{x - E[x]}{\sqrt{Var[x] + \epsilon}} \gamma + \beta

    Training: mean and *biased* variance of this batch per channel; when given, the
    running buffers (NumPy arrays, or Tensors whose ``.data`` is used) are updated IN
    PLACE, ``running = (1 - momentum) * running + momentum * batch``, running_var with
    the *unbiased* variance. Eval: the running statistics (both required).

    `momentum` is the exponential average factor itself. PyTorch's ``momentum=None``
    (cumulative average) belongs to the module, which tracks ``num_batches_tracked`` and
    passes ``momentum = 1 / num_batches_tracked``, as ``torch.nn.modules.batchnorm`` does.

    Shape:
        - x: ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)`` (any ``(N, C, *)``)
        - running_mean, running_var, weight, bias: ``(C,)`` or None
        - Output: same as x
    """
    xs = _shape(x)
    if len(xs) < 2:
        raise ValueError(f"batch_norm: expected input of at least 2D (N, C, *) (got {len(xs)}D input of shape {xs})")
    channels = xs[1]
    for name, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if v is not None and _shape(v) != (channels,):
            raise ValueError(f"batch_norm: {name} must have shape ({channels},) for input of shape {xs} "
                             f"(got {_shape(v)})")
    running_mean, running_var = _array(running_mean), _array(running_var)
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: eval mode (training=False) needs running_mean and running_var; "
                             "pass training=True to normalise with batch statistics")
        return BatchNormEval.apply(x, weight, bias, running_mean, running_var, eps)
    check_values_per_channel(xs)
    if momentum is None:
        raise ValueError("batch_norm: momentum=None (cumulative average) needs the batch count; pass "
                         "momentum=1/num_batches_tracked as the exponential average factor (BatchNorm modules do)")
    return BatchNorm.apply(x, weight, bias, running_mean, running_var, float(momentum), eps)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    r"""Layer normalisation over the trailing ``normalized_shape`` axes of each sample.

    .. math:: y = \frac{x - E[x]}{\sqrt{Var[x] + \epsilon}} \gamma + \beta

    (mean and biased variance over the last ``len(normalized_shape)`` axes).

    Shape:
        - x: ``(*, *normalized_shape)``; weight, bias: ``normalized_shape`` or None
        - Output: same as x
    """
    norm = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    xs = _shape(x)
    if len(norm) == 0 or len(xs) < len(norm) or xs[len(xs) - len(norm):] != norm:
        raise ValueError(f"layer_norm: input shape {xs} must end with normalized_shape {norm}")
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None and _shape(v) != norm:
            raise ValueError(f"layer_norm: {name} must have shape {norm} (got {_shape(v)})")
    return LayerNormFn.apply(x, weight, bias, len(norm), eps)


# ---- dropout ------------------------------------------------------------------------------
def dropout(x, p=0.5, training=True, rng=None):
    r"""Zero each element with probability `p` and scale the rest by :math:`1/(1-p)`.

    Identity when ``training`` is False or ``p == 0``. In training with ``p > 0`` the mask
    is drawn from `rng` (an ``np.random.Generator``), which is then required: a hidden
    global generator would make runs impossible to reproduce across ranks and strategies.

    Shape: output same as x.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return x
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"dropout in training mode with p={p} needs rng=np.random.Generator(...) "
                         f"(got {type(rng).__name__}); seed one and pass it, or use training=False")
    data = _array(x)
    return DropoutFn.apply(x, dropout_mask(data.shape, p, rng, data.dtype))
