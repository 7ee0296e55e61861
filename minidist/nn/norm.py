"""Normalisation layers: `BatchNorm1d`, `BatchNorm2d` (on a shared `_BatchNorm`) and
`LayerNorm`, with PyTorch's parameters, buffers and running-statistics rule."""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from . import functional as F
from .module import Module, Parameter


class _BatchNorm(Module):
    r"""Batch normalisation over the channel axis 1, as ``torch.nn.modules.batchnorm._BatchNorm``.

    .. math:: y = \frac{x - E[x]}{\sqrt{Var[x] + \epsilon}} \cdot \gamma + \beta

    In training mode the statistics are the batch's, per channel, with the biased
    variance; the running buffers are then updated as
    ``running = (1 - factor) * running + factor * batch`` (``running_var`` with the
    unbiased batch variance), where ``factor = momentum``, or, for ``momentum=None``,
    ``1 / num_batches_tracked`` (a cumulative average). ``num_batches_tracked`` counts
    training forwards. In eval mode the running statistics are used, unless
    ``track_running_stats=False``: then there are no buffers and batch statistics are
    always used.

    Parameters ``weight`` (ones) and ``bias`` (zeros) of shape (C,) exist when ``affine``;
    buffers ``running_mean`` (zeros), ``running_var`` (ones), ``num_batches_tracked``
    (int64 0-d) exist when ``track_running_stats``. The keyword `rng` is accepted for a
    uniform layer signature; the initialisation is deterministic and does not use it.

    Subclasses define `_check_input_dim`; `SyncBatchNorm` reuses
    `_exponential_average_factor` and `_stats_buffers`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"{type(self).__name__} needs num_features >= 1 (got {num_features})")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None for a cumulative average (got {momentum})")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features, dtype=dtype)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0

    def _check_input_dim(self, x) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_channels(self, x) -> None:
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__} expected input with num_features={self.num_features} "
                             f"channels at dim 1 (got input of shape {tuple(x.shape)})")

    def _exponential_average_factor(self) -> float:
        """The running-statistics factor for this forward; in training mode with tracked
        stats, counts the batch first (so momentum=None gives 1 / batches seen)."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1  # 0-d array: updated in place
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.data)
        return factor

    def _stats_buffers(self):
        """``(use_batch_stats, running_mean, running_var)`` as PyTorch picks them: batch
        statistics in training or when nothing is tracked; buffers passed (as arrays,
        updated in place) when they are updated (training) or used (eval)."""
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        pass_buffers = not self.training or self.track_running_stats
        rm = self.running_mean.data if pass_buffers and self.running_mean is not None else None
        rv = self.running_var.data if pass_buffers and self.running_var is not None else None
        return use_batch, rm, rv

    def forward(self, x):
        self._check_input_dim(x)
        self._check_channels(x)
        if self.training or self.running_mean is None:  # before num_batches_tracked counts it
            F.check_values_per_channel(tuple(x.shape))
        factor = self._exponential_average_factor()
        use_batch, rm, rv = self._stats_buffers()
        return F.batch_norm(x, rm, rv, self.weight, self.bias, use_batch, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input (statistics per channel C over N and L).

    Shape:
        - Input: ``(N, C)`` or ``(N, C, L)``
        - Output: same shape as input
    """

    def _check_input_dim(self, x) -> None:
        if x.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d expected 2D or 3D input (got {x.ndim}D input); the input's "
                             f"shape is {tuple(x.shape)}: use (N, C) or (N, C, L), or BatchNorm2d for (N, C, H, W)")


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input (statistics per channel C over N, H and W).

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: same shape as input
    """

    def _check_input_dim(self, x) -> None:
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d expected 4D input (got {x.ndim}D input); the input's "
                             f"shape is {tuple(x.shape)}: use (N, C, H, W), or BatchNorm1d for (N, C) or (N, C, L)")


class LayerNorm(Module):
    r"""``LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *,
    rng=None, dtype=np.float32)``, as ``torch.nn.LayerNorm``.

    .. math:: y = \frac{x - E[x]}{\sqrt{Var[x] + \epsilon}} \cdot \gamma + \beta

    mean and biased variance are taken over the last ``len(normalized_shape)`` dims of
    each sample; ``weight`` (ones) and ``bias`` (zeros) have shape ``normalized_shape``.
    Same statistics in training and eval. `rng` is accepted and unused (deterministic init).

    Shape:
        - Input: ``(N, *)`` ending in ``normalized_shape``
        - Output: same shape as input
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        self.normalized_shape = tuple(int(s) for s in shape)
        self.eps, self.elementwise_affine = float(eps), bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        k = len(self.normalized_shape)
        if tuple(x.shape[x.ndim - k:]) != self.normalized_shape or x.ndim < k:
            raise ValueError(f"LayerNorm expected input whose last {k} dimension(s) are normalized_shape="
                             f"{self.normalized_shape} (got input of shape {tuple(x.shape)})")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
