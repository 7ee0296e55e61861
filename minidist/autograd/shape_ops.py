"""Differentiable shape and indexing ops (reshape, transpose, getitem, concatenate,
stack), re-exported by `minidist.autograd.ops`: each Function's backward moves the
gradient back into the input's layout."""
from __future__ import annotations

import numpy as np

from .function import Function
from .tensor import Tensor


def _lift(x, like):
    """Python numbers and arrays become constant Tensors of `like`'s floating dtype (so
    2.0 * x stays float32); next to a non-float tensor they follow Tensor's defaults."""
    if isinstance(x, Tensor):
        return x
    if isinstance(like, Tensor) and like.data.dtype.kind == "f":
        return Tensor._from_array(np.asarray(x, dtype=like.data.dtype))
    return Tensor(x)


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


class GetItem(Function):
    """``a[index]``. Basic indexing (ints, slices, None, ...) writes the gradient back in
    place; advanced indexing scatters it with ``np.add.at``, so an element picked twice
    gets both contributions."""

    @staticmethod
    def forward(ctx, a, index, basic):
        ctx.shape, ctx.index, ctx.basic = a.shape, index, basic
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        full = np.zeros(ctx.shape, dtype=grad.dtype)
        if ctx.basic:
            full[ctx.index] = grad
        else:
            np.add.at(full, ctx.index, grad)
        return full, None, None


def _normalize_index(index):
    """(numpy index tuple, is it basic?). Tensors become arrays, lists become arrays and
    boolean masks become their ``nonzero()`` integer arrays (same selection, and a form
    ``np.add.at`` accepts)."""
    items = index if isinstance(index, tuple) else (index,)
    out, basic = [], True
    for item in items:
        if isinstance(item, Tensor):
            item = item.data
        elif isinstance(item, list):
            item = np.asarray(item)
        if isinstance(item, np.ndarray):
            basic = basic and item.ndim == 0 and item.dtype.kind in "iu"
            if item.dtype.kind == "b" and item.ndim > 0:
                out.extend(item.nonzero())
                continue
            if item.dtype.kind not in "iub":
                raise IndexError(f"index arrays must hold integers or booleans (got dtype "
                                 f"{item.dtype}); cast them with .astype(np.int64)")
        elif isinstance(item, (bool, np.bool_)):
            basic = False
        elif not (item is None or item is Ellipsis or isinstance(item, (slice, int, np.integer))):
            raise IndexError(f"unsupported index {item!r} of type {type(item).__name__}: use "
                             "ints, slices, None, Ellipsis, or integer/boolean arrays")
        out.append(item)
    return tuple(out), basic


class Concatenate(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.cuts = np.cumsum([x.shape[axis] for x in arrays[:-1]])
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.split(grad, ctx.cuts, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.moveaxis(grad, ctx.axis, 0))


def _tensor_list(tensors, what):
    if isinstance(tensors, (Tensor, np.ndarray)):
        raise TypeError(f"{what} expects a list or tuple of tensors (got one "
                        f"{type(tensors).__name__} of shape {tensors.shape}); wrap it in a list")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{what} expects at least one tensor (got an empty sequence)")
    like = next((t for t in tensors if isinstance(t, Tensor)), None)
    return [_lift(t, like) for t in tensors]



# ---- public functions -------------------------------------------------------------------
def reshape(a, shape):
    """The same data in `shape` (one entry may be -1), as ``np.reshape``."""
    return Reshape.apply(a, tuple(shape) if not isinstance(shape, int) else (shape,))


def transpose(a, axes=None):
    """Axes permuted by `axes` (reversed when None), as ``np.transpose``."""
    return Transpose.apply(a, None if axes is None else tuple(axes))


def getitem(a, index):
    """``a[index]`` with NumPy's basic and advanced indexing (Tensor indices allowed).

    Basic indexing returns a view of `a`'s data, as NumPy and PyTorch do. In backward,
    entries selected more than once (``a[[0, 0]]``) receive the sum of their gradients.
    """
    index, basic = _normalize_index(index)
    return GetItem.apply(a, index, basic)


def concatenate(tensors, axis=0):
    """Join tensors along an existing `axis`, as ``torch.cat``; each gets its slice of
    the gradient back.

    Shape:
        - Inputs: equal shapes except along `axis`.
        - Output: same, with `axis` the sum of the inputs' sizes there.
    """
    return Concatenate.apply(*_tensor_list(tensors, "concatenate"), axis=axis)


def stack(tensors, axis=0):
    """Join same-shaped tensors along a new `axis`, as ``torch.stack``.

    Shape:
        - Inputs: all of shape S.
        - Output: S with a new axis of size ``len(tensors)`` at `axis`.
    """
    return Stack.apply(*_tensor_list(tensors, "stack"), axis=axis)
