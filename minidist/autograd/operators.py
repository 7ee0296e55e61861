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


Tensor.__add__ = lambda self, other: ops.add(self, other)
Tensor.__radd__ = lambda self, other: ops.add(other, self)
Tensor.__sub__ = lambda self, other: ops.sub(self, other)
Tensor.__rsub__ = lambda self, other: ops.sub(other, self)
Tensor.__mul__ = lambda self, other: ops.mul(self, other)
Tensor.__rmul__ = lambda self, other: ops.mul(other, self)
Tensor.__truediv__ = lambda self, other: ops.div(self, other)
Tensor.__rtruediv__ = lambda self, other: ops.div(other, self)
Tensor.__pow__ = lambda self, exponent: ops.power(self, exponent)
Tensor.__rpow__ = lambda self, base: ops.power(base, self)
Tensor.__matmul__ = lambda self, other: ops.matmul(self, other)
Tensor.__rmatmul__ = lambda self, other: ops.matmul(other, self)
Tensor.__neg__ = lambda self: ops.neg(self)
Tensor.__getitem__ = lambda self, index: ops.getitem(self, index)

Tensor.sum = lambda self, axis=None, keepdims=False: ops.reduce_sum(self, axis, keepdims)
Tensor.mean = lambda self, axis=None, keepdims=False: ops.mean(self, axis, keepdims)
Tensor.max = lambda self, axis=None, keepdims=False: ops.reduce_max(self, axis, keepdims)
Tensor.reshape = lambda self, *shape: ops.reshape(self, _shape_arg(shape))
Tensor.transpose = lambda self, *axes: ops.transpose(self, _shape_arg(axes) or None)
Tensor.T = property(lambda self: ops.transpose(self, None))
Tensor.exp = lambda self: ops.exp(self)
Tensor.log = lambda self: ops.log(self)
Tensor.sqrt = lambda self: ops.sqrt(self)
Tensor.relu = lambda self: ops.relu(self)
Tensor.sigmoid = lambda self: ops.sigmoid(self)
Tensor.tanh = lambda self: ops.tanh(self)
