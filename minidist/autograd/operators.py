"""Tensor's operators and methods, each one line calling its op in ops.py or
elementwise.py (``a + b`` is ``ops.add(a, b)``). They are attached here, after both
exist, so that tensor.py imports no op and the ops import Tensor without a cycle.
"""
from __future__ import annotations

from . import ops
from .tensor import Tensor


def _shape_arg(args):
    """``t.reshape(2, 3)`` and ``t.reshape((2, 3))`` alike (``transpose`` too)."""
    return args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args


def _both_sides(op):
    """``a OP b`` and the reflected ``b OP a`` (when `a` is not a Tensor) for a binary op."""
    return (lambda self, other: op(self, other)), (lambda self, other: op(other, self))


Tensor.__add__, Tensor.__radd__ = _both_sides(ops.add)
Tensor.__sub__, Tensor.__rsub__ = _both_sides(ops.sub)
Tensor.__mul__, Tensor.__rmul__ = _both_sides(ops.mul)
Tensor.__truediv__, Tensor.__rtruediv__ = _both_sides(ops.div)
Tensor.__pow__, Tensor.__rpow__ = _both_sides(ops.power)
Tensor.__matmul__, Tensor.__rmatmul__ = _both_sides(ops.matmul)
Tensor.__neg__ = ops.neg
Tensor.__getitem__ = ops.getitem  # the ops take the tensor first: they serve as methods as they are
Tensor.sum, Tensor.mean, Tensor.max = ops.reduce_sum, ops.mean, ops.reduce_max
Tensor.exp, Tensor.log, Tensor.sqrt = ops.exp, ops.log, ops.sqrt
Tensor.relu, Tensor.sigmoid, Tensor.tanh = ops.relu, ops.sigmoid, ops.tanh
Tensor.reshape = lambda self, *shape: ops.reshape(self, _shape_arg(shape))
Tensor.transpose = lambda self, *axes: ops.transpose(self, _shape_arg(axes) or None)
Tensor.T = property(lambda self: ops.transpose(self, None))
