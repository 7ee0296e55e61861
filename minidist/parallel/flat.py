"""Flat buffers: many small arrays packed into one contiguous array per dtype, so that a
collective sends one message instead of one per parameter (PyTorch "coalesces" the same
way). Layouts are computed once; packing and unpacking are slice copies.
"""
from __future__ import annotations

import numpy as np


class FlatLayout:
    """Where each of `tensors` (anything with ``.data``: Parameters, buffers) lives in one
    flat array of `dtype`. Every tensor must have that dtype.

    Attributes:
        tensors (list), dtype (np.dtype), offsets (list[int]), count (int): elements in all.
    """

    def __init__(self, tensors, dtype):
        self.tensors = list(tensors)
        self.dtype = np.dtype(dtype)
        self.offsets, total = [], 0
        for t in self.tensors:
            self.offsets.append(total)
            total += t.data.size
        self.count = total

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize

    def slices(self):
        for t, off in zip(self.tensors, self.offsets):
            yield t, slice(off, off + t.data.size)

    def pack_data(self, out: np.ndarray | None = None) -> np.ndarray:
        """The tensors' values, concatenated."""
        out = np.empty(self.count, self.dtype) if out is None else out
        for t, s in self.slices():
            out[s] = t.data.reshape(-1)
        return out

    def unpack_data(self, flat: np.ndarray) -> None:
        """Copy `flat` back into each tensor's ``.data``, in place (the array objects stay,
        so views and optimizer references remain valid)."""
        for t, s in self.slices():
            t.data[...] = flat[s].reshape(t.data.shape)

    def pack_grads(self, out: np.ndarray | None = None, scale: float | None = None) -> np.ndarray:
        """The tensors' ``.grad`` concatenated (zeros where a gradient is None), times
        `scale` when given."""
        out = np.empty(self.count, self.dtype) if out is None else out
        for t, s in self.slices():
            if t.grad is None:
                out[s] = 0
            elif scale is None:
                out[s] = t.grad.reshape(-1)
            else:
                np.multiply(t.grad.reshape(-1), scale, out=out[s], casting="unsafe")
        return out

    def used_flags(self, out: np.ndarray | None = None) -> np.ndarray:
        """One element per tensor, in this layout's dtype: 1 where its ``.grad`` is set, 0
        where it is None (summed over ranks by hub and dp's ``find_unused_parameters``)."""
        out = np.empty(len(self.tensors), self.dtype) if out is None else out
        out[...] = [t.grad is not None for t in self.tensors]
        return out

    def drop_unused_grads(self, used: np.ndarray) -> None:
        """Set ``.grad = None`` on each tensor whose entry of `used` (summed `used_flags`)
        is 0: no rank had a gradient for it, so the optimizer skips it."""
        for t, count in zip(self.tensors, used):
            if count == 0:
                t.grad = None

    def unpack_grads(self, flat: np.ndarray, divisor=None) -> None:
        """Set each tensor's ``.grad`` to its slice of `flat` (divided by `divisor` when
        given: one pass instead of a divide, then a copy), in the tensor's dtype: written
        into the ``.grad`` array it already has when that one fits (what PyTorch's DDP
        does: the same gradient tensor, now holding the average), else a fresh array."""
        for t, s in self.slices():
            values = flat[s].reshape(t.data.shape)
            g = t.grad
            if not (g is not None and g.shape == t.data.shape and g.dtype == t.data.dtype and g.flags.writeable):
                g = t.grad = np.empty(t.data.shape, t.data.dtype)
            if divisor is None:
                np.copyto(g, values, casting="unsafe")
            else:
                np.divide(values, divisor, out=g, casting="unsafe")


def layouts_by_dtype(tensors) -> list[FlatLayout]:
    """One `FlatLayout` per dtype among `tensors`, in order of first appearance (so every
    rank with the same model builds the same layouts)."""
    groups: dict = {}
    for t in tensors:
        groups.setdefault(t.data.dtype, []).append(t)
    return [FlatLayout(ts, dtype) for dtype, ts in groups.items()]
