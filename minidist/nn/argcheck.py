"""Argument helpers shared by the functional modules: the array and shape of a Tensor or
array, and the losses' ``reduction`` check."""
from __future__ import annotations

import numpy as np

from ..autograd.tensor import Tensor

REDUCTIONS = ("mean", "sum", "none")


def array_of(x):
    """The NumPy array inside a Tensor (or the array itself); None stays None."""
    return x.data if isinstance(x, Tensor) else x


def shape_of(x):
    shape = getattr(x, "shape", None)  # Tensor and ndarray alike, without a conversion
    return tuple(shape) if shape is not None else np.shape(x)


def check_reduction(reduction, fn):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS} (got {reduction!r})")
