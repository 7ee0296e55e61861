"""Loss modules: `CrossEntropyLoss` and `MSELoss` over the functional losses."""
from __future__ import annotations

from . import functional as F
from .module import Module



class _Loss(Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        F.check_reduction(reduction, type(self).__name__)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    r"""``CrossEntropyLoss(reduction="mean")``: softmax cross entropy against class indices.

    .. math:: \ell_n = -\log \frac{\exp(x_{n, y_n})}{\sum_c \exp(x_{n, c})}

    averaged over n (``"mean"``), summed (``"sum"``) or returned per sample (``"none"``).

    Shape:
        - Input: ``(N, C)`` logits
        - Target: ``(N,)`` integer class indices in [0, C)
        - Output: scalar, or ``(N,)`` for ``"none"``
    """

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, reduction=self.reduction)


class MSELoss(_Loss):
    r"""``MSELoss(reduction="mean")``: :math:`\ell_n = (x_n - y_n)^2`, averaged over every
    element (``"mean"``), summed (``"sum"``) or elementwise (``"none"``).

    Shape:
        - Input: ``(*)``; Target: same shape as input
        - Output: scalar, or the input's shape for ``"none"``
    """

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)
