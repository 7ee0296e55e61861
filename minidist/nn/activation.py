"""Elementwise activations and `Dropout`, as modules."""
from __future__ import annotations

import numpy as np

from . import functional as F
from . import init
from .module import Module


class ReLU(Module):
    r"""``ReLU()``: :math:`\max(0, x)` elementwise. Shape: any; output same shape."""

    def forward(self, x):
        return F.relu(x)


class Sigmoid(Module):
    r"""``Sigmoid()``: :math:`1 / (1 + e^{-x})` elementwise. Shape: any; output same shape."""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    r"""``Tanh()``: :math:`\tanh(x)` elementwise. Shape: any; output same shape."""

    def forward(self, x):
        return F.tanh(x)


class Dropout(Module):
    r"""``Dropout(p=0.5, *, rng=None)``: in training mode zero each element with
    probability `p` and scale the survivors by :math:`1 / (1 - p)`; identity in eval.

    The masks come from `rng`, advanced by each training forward; with None, from the
    process-wide generator that `minidist.manual_seed` reseeds (as torch's default
    generator), so two layers draw different masks and a reseeded script repeats them.
    Shape: any; output same shape.
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1 (got p={p})")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator or None (got {type(rng).__name__})")
        self.p = float(p)
        self.rng = rng

    def forward(self, x):
        return F.dropout(x, self.p, self.training, init.default_rng(self.rng))

    def extra_repr(self) -> str:
        return f"p={self.p}"
