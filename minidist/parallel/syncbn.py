"""`SyncBatchNorm`: batch normalisation with the statistics of the *global* batch.

Each rank holds a shard of the batch. In training mode the forward all-reduces, per
channel, the sum, the sum of squares and the count of this rank's values (one buffer of
2C+1 float64, phase ``"syncbn"``); every rank then normalises with the global mean and
biased variance and updates its running statistics with them (unbiased variance), so the
output and the running buffers are those of BatchNorm over the global batch, whatever the
shard sizes. The backward all-reduces the two per-channel gradient sums (2C float64).
The arithmetic is minidist.nn.norm_ops', the pieces PyTorch's SyncBatchNorm is built from.

Gradient scaling. Rank r's incoming gradient is that of *its own* loss (a mean over its
n_r samples); the data-parallel wrapper then averages parameter gradients with weights
a_r (``average="samples"``: a_r = n_r / N; ``"ranks"``: 1 / R; ``"sum"``: 1, for dp's
``loss_on_root``, where each rank's incoming gradient is already the global loss's). The global loss is
``sum_r a_r L_r``, so the backward all-reduces ``a_r * (sum dy, sum dy*(x-mean))`` and
returns this rank's input gradient divided by a_r: once the wrapper averages, every
gradient is exactly the global-batch one (for ``"ranks"`` with equal shards this is
PyTorch's formula). The wrappers set `grad_average` to their own `average`.
"""
from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from ..comm import allreduce
from ..nn.norm import _BatchNorm
from ..nn import functional as F
from ..nn.norm_ops import (batch_norm_backward_elemt, batch_norm_backward_reduce, batch_norm_elemt,
                           batch_norm_gather_stats, batch_norm_stats)

PHASE = "syncbn"
GRAD_AVERAGES = ("samples", "ranks", "sum")


class SyncBatchNormFunction(Function):
    """Training-mode batch norm over axis 1 with statistics all-reduced across ranks.

    ``forward(ctx, x, weight, bias, *, running_mean, running_var, momentum, eps, comm,
    grad_average, algorithm)``; weight/bias may be None, running buffers too.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, *, running_mean, running_var, momentum, eps, comm,
                grad_average, algorithm):
        s, ss, n_local = batch_norm_stats(x)
        packed = np.concatenate([s, ss, [float(n_local)]])
        with comm.phase(PHASE):
            allreduce(comm, packed, "sum", algorithm)
        c = s.size
        n_global = int(round(packed[-1]))
        mean, invstd = batch_norm_gather_stats(packed[:c], packed[c:2 * c], n_global, running_mean,
                                               running_var, momentum, eps, dtype=x.dtype)
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
                allreduce(ctx.comm, packed, "sum", ctx.algorithm)
            c = sum_dy.size
            dx = batch_norm_backward_elemt(grad, x, mean, invstd, weight, packed[:c], packed[c:],
                                           ctx.n_global * ctx.share)
        return dx, dweight if need_w else None, dbias if need_b else None


class SyncBatchNorm(_BatchNorm):
    r"""``SyncBatchNorm(num_features, comm, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, algorithm="ring", grad_average="samples", rng=None,
    dtype=np.float32)``, as ``torch.nn.SyncBatchNorm`` with `comm` for the process group.

    .. math:: y = \frac{x - E[x]}{\sqrt{Var[x] + \epsilon}} \cdot \gamma + \beta

    with E and Var over the global batch (every rank's shard) in training mode; eval mode
    uses the running statistics and communicates nothing. `algorithm` is the all-reduce
    used (minidist.comm.allreduce's names). Parameters and buffers as `BatchNorm1d`.

    Shape:
        - Input: ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``; N may differ across ranks
        - Output: same shape as input
    """

    def __init__(self, num_features: int, comm, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, algorithm: str = "ring",
                 grad_average: str = "samples", rng: np.random.Generator | None = None,
                 dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, rng=rng, dtype=dtype)
        if comm is None or not hasattr(comm, "size"):
            raise TypeError(f"SyncBatchNorm needs a minidist.comm.Communicator (got {type(comm).__name__})")
        if grad_average not in GRAD_AVERAGES:
            raise ValueError(f"grad_average must be one of {GRAD_AVERAGES} (got {grad_average!r})")
        self.comm, self.algorithm, self.grad_average = comm, algorithm, grad_average

    def _check_input_dim(self, x) -> None:
        if x.ndim < 2:
            raise ValueError(f"SyncBatchNorm expected at least 2D input (got {x.ndim}D input)")

    def forward(self, x):
        self._check_input_dim(x)
        self._check_channels(x)
        factor = self._exponential_average_factor()
        use_batch, rm, rv = self._stats_buffers()
        if not use_batch:  # eval with running statistics: nothing to synchronise
            return F.batch_norm(x, rm, rv, self.weight, self.bias, False, factor, self.eps)
        return SyncBatchNormFunction.apply(
            x, self.weight, self.bias, running_mean=rm, running_var=rv, momentum=factor, eps=self.eps,
            comm=self.comm, grad_average=self.grad_average, algorithm=self.algorithm)

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
