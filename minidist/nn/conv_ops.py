"""2-D convolution and max pooling as fused Functions (forward beside analytic backward).

Convolution copies the padded input once, through a strided view, into an im2col
matrix and does one matmul; backward reuses that matrix for the weight gradient when it
is at most `KEEP_COLUMNS_UP_TO` bytes, and rebuilds it from the saved input when larger
(it is kh*kw times the input's size). Its input gradient, for stride 1, is a "full"
convolution of the padded gradient with the flipped kernel, by the same im2col and
matmul; other strides scatter ``W^T @ grad`` into a padded buffer (col2im). Pooling
copies the same windows once into a stack of offsets and keeps a running maximum over
it; backward writes each offset's gradients back through one strided slice covering
every window at once (when the windows tile the input, straight into a view of the
result: no padded buffer). Every loop is over kernel offsets or chunks of samples,
never over pixels.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..autograd.function import Function
from ..autograd.graph import is_grad_enabled
from ..autograd.workspace import recycled, scratch

# Columns kept for backward up to this size (bytes): rebuilding them is a copy of this
# size with short rows (0.12 and 0.38 ms for the bench CNN's 1.8 and 3.6 MB, a third of
# its convolutions' backward); above it the memory matters more (docs/performance.md).
KEEP_COLUMNS_UP_TO = 16 << 20


def pair(value, name):
    """``3 -> (3, 3)``; a 2-tuple passes through. Raises for anything else."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints (got {value!r})")


def output_size(size, kernel, stride, padding):
    """``floor((size + 2 * padding - kernel) / stride) + 1``, as PyTorch."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x, padding, value=0.0):
    """x with `value` borders, in a scratch buffer: use it within the call only."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    out = scratch("pad", (n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    out.fill(value)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def _window_view(xp, kernel, stride, out_hw):
    """Every window of the padded input at once, as a read-only strided view
    (N, C, kh, kw, Ho, Wo): [n, c, p, q, i, j] = xp[n, c, i*sh + p, j*sw + q]."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    s0, s1, s2, s3 = xp.strides
    return as_strided(xp, shape=xp.shape[:2] + (kh, kw, ho, wo),
                      strides=(s0, s1, s2, s3, s2 * sh, s3 * sw), writeable=False)


def _columns(x, geometry, keep=False):
    """im2col of x: (N, C*kh*kw, Ho*Wo), where row (c, p, q) holds channel c at kernel
    offset (p, q) for every output position; in a scratch buffer (use within the call)
    or, with `keep`, in an array that may be saved for backward. Copied from
    `_window_view`, whose innermost axis walks along an input row."""
    _, kernel, stride, padding, out_hw = geometry
    view = _window_view(_pad(x, padding), kernel, stride, out_hw)
    cols = recycled(view.shape, x.dtype) if keep else scratch("conv.cols", view.shape, x.dtype)
    np.copyto(cols, view)
    n, c = x.shape[:2]
    return cols.reshape(n, c * kernel[0] * kernel[1], out_hw[0] * out_hw[1])


def _offset_slices(kernel, stride, out_hw):
    """For each kernel offset (p, q), row-major, the (rows, cols) slices of the padded
    input that hold that offset's element of every window."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    return [(slice(p, p + sh * (ho - 1) + 1, sh), slice(q, q + sw * (wo - 1) + 1, sw))
            for p in range(kh) for q in range(kw)]


class Conv2dFn(Function):
    """Cross-correlation of (N, C, H, W) input with (O, C, kh, kw) weight, plus bias (O,).

    ``out[n, o, i, j] = bias[o] + sum_{c,p,q} x_pad[n, c, i*sh + p, j*sw + q] * w[o, c, p, q]``

    As a batched matmul ``out[n] = W (O, C*kh*kw) @ cols[n] (C*kh*kw, Ho*Wo)``, which
    lands directly in (N, O, Ho, Wo) order. Backward: ``dW = sum_n dout[n] @ cols[n]^T``,
    ``db = sum(dout)``, ``dcols[n] = W^T @ dout[n]``, then col2im.

    ``forward(ctx, x, weight, bias, stride, padding)`` with stride/padding as pairs.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        ho = output_size(h, kh, stride[0], padding[0])
        wo = output_size(w, kw, stride[1], padding[1])
        ctx.geometry = (x.shape, (kh, kw), stride, padding, (ho, wo))
        keep = (ctx.needs_input_grad[1] and is_grad_enabled()
                and n * c * kh * kw * ho * wo * x.itemsize <= KEEP_COLUMNS_UP_TO)
        cols = _columns(x, ctx.geometry, keep)
        out = recycled((n, o, ho * wo), np.result_type(weight, cols))  # (N, O, Ho*Wo)
        np.matmul(weight.reshape(o, -1), cols, out=out)
        if bias is not None:  # (O, Ho*Wo), not (O, 1): one contiguous loop per sample, as in norm_ops
            out += np.repeat(bias, ho * wo).reshape(o, ho * wo)
        ctx.save_for_backward(x, weight)
        ctx.cols = cols if keep else None  # else backward rebuilds them from x
        return out.reshape(n, o, ho, wo)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        x_shape, kernel, stride, padding, out_hw = ctx.geometry
        n, c, h, w = x_shape
        o = weight.shape[0]
        g = grad.reshape(n, o, out_hw[0] * out_hw[1])  # (N, O, Ho*Wo), as out was (no -1: N may be 0)
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            dx = _input_grad(grad, weight, ctx.geometry)
        if ctx.needs_input_grad[1]:
            cols = _columns(x, ctx.geometry) if ctx.cols is None else ctx.cols
            dweight = _weight_grad(g, cols).reshape(weight.shape)
        if ctx.needs_input_grad[2]:
            dbias = np.einsum("nop->o", g)  # a third of sum(axis=(0, 2))'s time
        return dx, dweight, dbias


def _input_grad(grad, weight, geometry):
    """dL/dx from ``dcols = W^T @ grad``: what each output position sends back through
    each kernel offset (p, q), to input pixel (i*sh + p - ph, j*sw + q - pw)."""
    _, (kh, kw), stride, (ph, pw), _ = geometry
    if stride == (1, 1) and ph < kh and pw < kw:
        return _input_grad_full(grad, weight, geometry)
    return _input_grad_col2im(grad, weight, geometry)


def _input_grad_full(grad, weight, geometry):
    """Stride 1: dx is the "full" correlation of grad, zero-padded by ``kernel - 1 -
    padding``, with the kernel flipped and its channel axes swapped. Its im2col is taken
    in the padded width: row (o, p, q) of a sample is one contiguous run of the padded
    grad, H*gw long (its gw - W extra positions per row read on into the next row and are
    cropped at the end), so the copy moves long runs, not W-long rows; one matmul per
    chunk of samples (about 1 MiB of columns, so they stay small and in cache)."""
    (n, c, h, w), (kh, kw), _, (ph, pw), _ = geometry
    o = weight.shape[0]
    gh, gw = h + kh - 1, w + kw - 1
    dtype = np.result_type(weight, grad)
    flat = scratch("conv.grad_padded", (n * o * gh * gw + kw - 1,), dtype)  # + the last run's overhang
    flat.fill(0)
    top, left = kh - 1 - ph, kw - 1 - pw
    flat[:n * o * gh * gw].reshape(n, o, gh, gw)[:, :, top:top + grad.shape[2], left:left + grad.shape[3]] = grad
    runs = as_strided(flat, shape=(n, o, kh, kw, h * gw), writeable=False,
                      strides=tuple(flat.itemsize * k for k in (o * gh * gw, gh * gw, gw, 1, 1)))
    flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, o * kh * kw)
    chunk = max(1, (1 << 20) // max(1, runs[:1].nbytes))
    cols = scratch("conv.grad_cols", (min(chunk, n), o, kh, kw, h * gw), dtype)
    wide = scratch("conv.dx_wide", (n, c, h * gw), dtype)
    for i in range(0, n, chunk):
        part = cols[:min(chunk, n - i)]
        np.copyto(part, runs[i:i + chunk])
        np.matmul(flipped, part.reshape(len(part), o * kh * kw, h * gw), out=wide[i:i + chunk])
    dx = recycled((n, c, h, w), dtype)
    np.copyto(dx, wide.reshape(n, c, h, gw)[..., :w])
    return dx


def _input_grad_col2im(grad, weight, geometry):
    """Any stride: each kernel offset's dcols scattered (added) into a padded buffer,
    then cropped."""
    (n, c, h, w), (kh, kw), stride, (ph, pw), out_hw = geometry
    o = weight.shape[0]
    g = grad.reshape(n, o, out_hw[0] * out_hw[1])
    dcols = scratch("conv.dcols", (n, weight[0].size, g.shape[2]), np.result_type(weight, g))
    np.matmul(weight.reshape(o, -1).T, g, out=dcols)
    dcols = dcols.reshape(n, c, kh, kw, *out_hw)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dcols.dtype)
    for k, (rows, cols) in enumerate(_offset_slices((kh, kw), stride, out_hw)):
        dxp[:, :, rows, cols] += dcols[:, :, k // kw, k % kw]
    return dxp[:, :, ph:ph + h, pw:pw + w]


def _weight_grad(g, cols):
    """``sum_n g[n] @ cols[n]^T`` for g (N, O, P) and cols (N, K, P), the cheaper way:
    per-item products then a sum (an (N, O, K) temporary), or, when that temporary would
    outgrow the inputs (many channels, few output positions), one matmul over (n, p)
    after copying both operands into (O, N*P) and (K, N*P) layouts."""
    n, o, p = g.shape
    k = cols.shape[1]
    if o * k <= (o + k) * p:
        per_item = scratch("conv.dweight", (n, o, k), np.result_type(g, cols))
        return np.matmul(g, cols.transpose(0, 2, 1), out=per_item).sum(axis=0)
    return g.transpose(1, 0, 2).reshape(o, n * p) @ cols.transpose(1, 0, 2).reshape(k, n * p).T


class MaxPool2dFn(Function):
    """Max over each (kh, kw) window of the (-inf padded) (N, C, H, W) input.

    Backward sends each output's gradient where PyTorch's CPU kernel does: to the first
    maximal element of its window (ties), to the last NaN when the window holds NaN (and
    the output is NaN), and, in a window of only -inf and padding, to its first element
    inside the input (never to the padding). Gradients add up where windows overlap.

    ``forward(ctx, x, kernel, stride, padding)`` with all three as pairs.
    """

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        n, c, h, w = x.shape
        ho = output_size(h, kernel[0], stride[0], padding[0])
        wo = output_size(w, kernel[1], stride[1], padding[1])
        xp = _pad(x, padding, -np.inf)
        # one copy makes each offset's values contiguous: (kh*kw, N, C, Ho, Wo); the passes
        # below then run 3-8x faster than on strided slices of xp
        view = _window_view(xp, kernel, stride, (ho, wo)).transpose(2, 3, 0, 1, 4, 5)
        windows = scratch("maxpool.windows", view.shape, x.dtype)
        np.copyto(windows, view)
        windows = windows.reshape((kernel[0] * kernel[1], n, c, ho, wo))
        # running max over the kernel offsets; `arg` remembers the winning offset: offset k
        # replaces it when strictly greater (ties keep the first); k only grows, so
        # arg = max(arg, k * better) is "k where better". NaN and all -inf windows after.
        out = recycled(windows.shape[1:], x.dtype)
        np.copyto(out, windows[0])
        arg = recycled(out.shape, np.uint8 if len(windows) < 256 else np.int32)
        arg.fill(0)
        better = scratch("maxpool.better", out.shape, bool)
        better_k = scratch("maxpool.better_k", out.shape, arg.dtype)
        for k, window_k in enumerate(windows[1:], start=1):
            np.greater(window_k, out, out=better)
            np.maximum(out, window_k, out=out)
            np.maximum(arg, np.multiply(better, arg.dtype.type(k), out=better_k), out=arg)
        _pick_nan_and_inside(arg, out, windows, x.shape, kernel, stride, padding)
        ctx.arg = arg
        ctx.geometry = (x.shape, kernel, stride, padding, (ho, wo))
        return out

    @staticmethod
    def backward(ctx, grad):
        if _windows_tile(ctx.geometry):
            return _tiled_input_grad(grad, ctx.arg, ctx.geometry)
        (n, c, h, w), kernel, stride, (ph, pw), out_hw = ctx.geometry
        dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad.dtype)
        disjoint = stride[0] >= kernel[0] and stride[1] >= kernel[1]
        is_k = scratch("maxpool.is_k", grad.shape, bool)
        grad_k = scratch("maxpool.grad_k", grad.shape, grad.dtype)
        for k, (rows, cols) in enumerate(_offset_slices(kernel, stride, out_hw)):
            np.equal(ctx.arg, k, out=is_k)
            if disjoint:  # each input element is in one window at most: write, not add
                np.multiply(grad, is_k, out=dxp[:, :, rows, cols])
            else:
                dxp[:, :, rows, cols] += np.multiply(grad, is_k, out=grad_k)
        return dxp[:, :, ph:ph + h, pw:pw + w]


def _windows_tile(geometry):
    """Whether the windows tile the input exactly (stride == kernel, no padding, H and W
    multiples of the kernel): every input element then lies in exactly one window."""
    (_, _, h, w), kernel, stride, padding, (ho, wo) = geometry
    return stride == kernel and padding == (0, 0) and (h, w) == (ho * kernel[0], wo * kernel[1])


def _tiled_input_grad(grad, arg, geometry):
    """Max-pool's input gradient when the windows tile the input: each offset's share is
    written straight into a (N, C, Ho, kh, Wo, kw) view of a fresh (N, C, H, W) result,
    which it covers exactly once between them (no zero fill, no padded buffer, no adds)."""
    (n, c, h, w), (kh, kw), _, _, (ho, wo) = geometry
    dx = recycled((n, c, h, w), grad.dtype)
    tiles = dx.reshape(n, c, ho, kh, wo, kw)
    is_k = scratch("maxpool.is_k", grad.shape, bool)
    for k in range(kh * kw):
        np.multiply(grad, np.equal(arg, k, out=is_k), out=tiles[:, :, :, k // kw, :, k % kw])
    return dx


def _pick_nan_and_inside(arg, out, windows, x_shape, kernel, stride, padding):
    """The rare windows, set as PyTorch's kernel does: a window holding NaN (its output is
    NaN) to its last NaN; a window of only -inf and padding to its first element inside
    the input, never to the padding. Costs one pass over `out` when there are none."""
    if np.isnan(out).any():
        for k, window_k in enumerate(windows):
            arg[np.isnan(window_k)] = k
    if padding == (0, 0):
        return
    all_minus_inf = out == -np.inf
    if all_minus_inf.any():
        inside = _pad(np.ones((1, 1) + x_shape[2:], dtype=bool), padding, False)[0, 0]
        slices = _offset_slices(kernel, stride, out.shape[2:])
        first_inside = np.full(out.shape[2:], len(slices), dtype=arg.dtype)
        for k in reversed(range(len(slices))):
            first_inside[inside[slices[k]]] = k
        arg[all_minus_inf] = np.broadcast_to(first_inside, out.shape)[all_minus_inf]
