"""`SyncBatchNorm`: batch normalisation with the statistics of the *global* batch.

In training, over more than one rank, the forward all-gathers each rank's (count, mean,
M2) per channel (2C+1 float64, ``comm.allgather``, phase ``"syncbn"``) and combines them in
rank order (Chan et al.'s parallel variance, as PyTorch's
``batch_norm_gather_stats_with_counts``): output and running statistics are BatchNorm's
over the global batch, whatever the shard sizes, with no E[x^2] - E[x]^2 cancellation.
The backward all-reduces the two per-channel gradient sums (2C float64). Eval mode, or
one rank, is plain BatchNorm. The layer is handed its communicator and only calls its
methods (`allgather`, `allreduce`, `phase`), so nn imports no comm or parallel. How the
gradient is scaled under each wrapper's `average`: docs/syncbn.md.
"""
from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from . import functional as F
from .norm import _BatchNorm
from .norm_ops import (update_running_stats, batch_norm_backward_elemt, batch_norm_backward_reduce,
                           batch_norm_elemt)

PHASE = "syncbn"
GRAD_AVERAGES = ("samples", "ranks", "sum")


def batch_norm_local_stats(x):
    """This rank's ``(count, mean, M2)``: the count of values per channel (``x.size //
    C``) and, per channel over every axis but 1, their mean and sum of squared deviations
    from it, in float64 (two passes: no cancellation). An empty shard gives zeros."""
    axes = (0,) + tuple(range(2, x.ndim))
    count = x.size // x.shape[1]
    if count == 0:
        return 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    x64 = x.astype(np.float64)  # a copy: centred in place below
    mean = x64.sum(axis=axes) / count
    x64 -= mean.reshape((1, -1) + (1,) * (x.ndim - 2))
    return count, mean, np.square(x64, out=x64).sum(axis=axes)


def batch_norm_gather_stats_with_counts(stats, running_mean=None, running_var=None, momentum=0.1,
                                        eps=1e-5, dtype=np.float64):
    r"""Combine every rank's ``[count, mean (C), M2 (C)]`` rows (`stats`, shape (N, 2C+1),
    rank order) into the global ``(mean, invstd, count)``; update the running buffers, when
    given, IN PLACE (`minidist.nn.norm_ops`' rule, unbiased variance)::

        n = sum_r n_r,   mean = sum_r n_r mean_r / n,
        M2 = sum_r M2_r + sum_r n_r (mean_r - mean)^2,   var = M2 / n   (biased)

    Every term of M2 is non-negative, so nothing cancels. Identical on every rank, which
    holds the same `stats`. `dtype`: that of the returned mean and invstd.
    """
    c = (stats.shape[1] - 1) // 2
    counts, means, m2s = stats[:, 0], stats[:, 1:c + 1], stats[:, c + 1:]
    n = int(round(counts.sum()))
    if n <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got {n} value(s) per "
                         "channel over all ranks; use a larger batch (or eval mode)")
    mean = counts @ means / n
    var = (m2s.sum(axis=0) + counts @ np.square(means - mean)) / n
    update_running_stats(running_mean, running_var, mean, var, n, momentum)
    return mean.astype(dtype, copy=False), (1.0 / np.sqrt(var + eps)).astype(dtype, copy=False), n


class SyncBatchNormFunction(Function):
    """Training-mode batch norm over axis 1 with statistics gathered across ranks.

    ``forward(ctx, x, weight, bias, *, running_mean, running_var, momentum, eps, comm,
    grad_average, algorithm)``; weight/bias may be None, running buffers too.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, *, running_mean, running_var, momentum, eps, comm,
                grad_average, algorithm):
        n_local, mean_local, m2_local = batch_norm_local_stats(x)
        mine = np.concatenate([[float(n_local)], mean_local, m2_local])
        with comm.phase(PHASE):
            everyone = comm.allgather(mine).reshape(comm.size, mine.size)
        mean, invstd, n_global = batch_norm_gather_stats_with_counts(
            everyone, running_mean, running_var, momentum, eps, dtype=x.dtype)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.comm, ctx.algorithm = comm, algorithm
        # this rank's weight in the wrapper's average (see the module docstring)
        ctx.share = {"samples": n_local / n_global, "ranks": 1.0 / comm.size, "sum": 1.0}[grad_average]
        ctx.n_global = n_global
        return batch_norm_elemt(x, mean, invstd, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, invstd = ctx.saved_tensors
        sum_dy, sum_dy_xmu, dweight, dbias = batch_norm_backward_reduce(grad, x, mean, invstd)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = None
        if need_x:
            packed = np.concatenate([sum_dy, sum_dy_xmu]).astype(np.float64) * ctx.share
            with ctx.comm.phase(PHASE):
                ctx.comm.allreduce(packed, "sum", ctx.algorithm)
            c = sum_dy.size
            if ctx.share == 0:  # an empty shard: nothing to return (and 0/0 in the formula)
                dx = np.zeros_like(grad)
            else:
                dx = batch_norm_backward_elemt(grad, x, mean, invstd, weight, packed[:c], packed[c:],
                                               ctx.n_global * ctx.share)
        return dx, dweight if need_w else None, dbias if need_b else None


class SyncBatchNorm(_BatchNorm):
    r"""``SyncBatchNorm(num_features, comm, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, algorithm="ring", grad_average="samples", rng=None,
    dtype=np.float32)``, as ``torch.nn.SyncBatchNorm`` with `comm` for the process group.

    .. math:: y = \frac{x - E[x]}{\sqrt{Var[x] + \epsilon}} \cdot \gamma + \beta

    with E and Var over the global batch (every rank's shard) in training mode. Eval mode
    communicates nothing: it uses the running statistics, or, with
    ``track_running_stats=False``, this rank's own batch statistics (as PyTorch); so does
    a world of one rank. `algorithm` is the backward's all-reduce (``comm.allreduce``'s
    names; the forward's statistics travel by ring all-gather). Parameters and buffers as
    `BatchNorm1d`.

    Shape:
        - Input: ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``; N may differ across ranks
        - Output: same shape as input
    """

    def __init__(self, num_features: int, comm, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, algorithm: str = "ring",
                 grad_average: str = "samples", rng: np.random.Generator | None = None,
                 dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, rng=rng, dtype=dtype)
        missing = [name for name in ("size", "phase", "allgather", "allreduce") if not hasattr(comm, name)]
        if missing:
            raise TypeError(f"SyncBatchNorm needs a minidist.comm.Communicator (got {type(comm).__name__}, "
                            f"which lacks {', '.join(missing)})")
        if grad_average not in GRAD_AVERAGES:
            raise ValueError(f"grad_average must be one of {GRAD_AVERAGES} (got {grad_average!r})")
        self.comm, self.algorithm, self.grad_average = comm, algorithm, grad_average

    def _check_input_dim(self, x) -> None:
        if x.ndim < 2:
            raise ValueError(f"SyncBatchNorm expected at least 2D input (got {x.ndim}D input)")

    def forward(self, x):
        self._check_input_dim(x)
        self._check_channels(x)
        use_batch = self._stats_buffers()[0]
        sync = use_batch and self.training and self.comm.size > 1  # PyTorch's need_sync
        if use_batch and not sync:
            F.check_values_per_channel(tuple(x.shape))  # before num_batches_tracked counts it
        factor = self._exponential_average_factor()
        use_batch, rm, rv = self._stats_buffers()
        if not sync:
            return F.batch_norm(x, rm, rv, self.weight, self.bias, use_batch, factor, self.eps)
        try:
            return SyncBatchNormFunction.apply(
                x, self.weight, self.bias, running_mean=rm, running_var=rv, momentum=factor, eps=self.eps,
                comm=self.comm, grad_average=self.grad_average, algorithm=self.algorithm)
        except ValueError:  # one value per channel over all ranks: raised before the buffers change
            if self.track_running_stats:
                self.num_batches_tracked.data -= 1  # and uncounted, on every rank alike
            raise

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ranks={self.comm.size}"

    @classmethod
    def convert_sync_batchnorm(cls, module, comm, **kwargs):
        """Replace every BatchNorm1d/2d in `module` (recursively, itself included) by a
        SyncBatchNorm over `comm` that shares its Parameters and buffers (an optimizer
        built earlier keeps working) and its training mode. Returns the converted module;
        `kwargs` go to SyncBatchNorm (e.g. ``algorithm``)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(module.num_features, comm, module.eps, module.momentum, module.affine,
                       module.track_running_stats, dtype=_dtype_of(module), **kwargs)
            for name in ("weight", "bias"):
                value = getattr(module, name)
                if value is not None:
                    setattr(sync, name, value)
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                sync._buffers[name] = module._buffers.get(name)
            sync.train(module.training)
            return sync
        for name, child in list(module.named_children()):
            converted = cls.convert_sync_batchnorm(child, comm, **kwargs)
            if converted is not child:
                module.add_module(name, converted)
        return module


def _dtype_of(bn) -> np.dtype:
    for t in (bn.weight, bn.running_mean):
        if t is not None:
            return t.data.dtype
    return np.dtype(np.float32)


def set_grad_average(module, average: str) -> None:
    """Tell every SyncBatchNorm in `module` how the wrapper averages gradients."""
    if average not in GRAD_AVERAGES:
        raise ValueError(f"grad_average must be one of {GRAD_AVERAGES} (got {average!r})")
    for m in module.modules():
        if isinstance(m, SyncBatchNorm):
            m.grad_average = average


def convert_sync_batchnorm(module, comm, **kwargs):
    """`SyncBatchNorm.convert_sync_batchnorm` (PyTorch's name, as a function)."""
    return SyncBatchNorm.convert_sync_batchnorm(module, comm, **kwargs)
