"""`wrap(model, strategy, comm, **options)`: one entry point for every strategy.

The wrapped model is called like the model and every strategy runs the same loop::

    model = minidist.parallel.wrap(net, "ddp", comm)
    opt = minidist.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:                 # loader yields this rank's shard
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()                 # ddp: bucketed ring all-reduce may start here
        model.step(opt)                 # communication that is left + the update

The options of each strategy are listed in `wrap`'s docstring.
"""
from __future__ import annotations

from .ddp import DistributedDataParallel
from .dp import DataParallel
from .hub import HubParallel
from .local import LocalModel
from ..nn.syncbn import set_grad_average

STRATEGIES = {"local": LocalModel, "dp": DataParallel, "hub": HubParallel, "ddp": DistributedDataParallel}


def wrap(model, strategy: str, comm=None, **options):
    """Wrap `model` for `strategy` over `comm`. Returns a `ParallelModel`: call it like the
    model; ``step(optimizer)`` ends each step. Strategies and their options:

    * ``"local"`` (`LocalModel`): no communication; the reference on the global batch.
    * ``"dp"`` (`DataParallel`): ``broadcast="linear"|"binomial"``, ``scatter_inputs``,
      ``loss_on_root``, ``find_unused_parameters`` (a used flag per parameter rides in the
      "grad-gather" messages; parameters no rank used keep ``.grad`` None on rank 0).
    * ``"hub"`` (`HubParallel`): ``reduce=``, ``broadcast=`` ("linear"|"binomial"),
      ``broadcast_buffers``, ``find_unused_parameters`` (flags ride in the reduced and
      broadcast gradients).
    * ``"ddp"`` (`DistributedDataParallel`): ``bucket_cap_mb``, ``overlap``, ``algorithm``,
      ``broadcast_buffers``, ``comm_hook="fp16"``, ``static_graph`` (a promise of the same
      gradients in the same order each iteration, checked at the first step; it makes the
      overlap deterministic), ``find_unused_parameters`` (a used-map all-reduce per step),
      ``record_events``; ``no_sync()``.

    Common options: ``average="samples"`` (default: each rank's gradient weighted by its
    sample count, which rides as one extra element of the gradient messages, then divided
    by the global count: exact for uneven shards, no extra message) or ``"ranks"`` (divide
    by the number of ranks, as PyTorch; exact for equal shards only);
    ``nonfinite="raise"`` (default: a NaN or Inf in any rank's local gradients raises
    `NonFiniteGradientError` on every rank, naming the step and the ranks), ``"skip"``
    (every rank skips that update, as loss scaling does) or ``"ignore"``; the flags ride
    in the gradient messages too (tail.py); ``check_replicas=True`` (hash the parameters
    on every rank after each step and raise `ReplicaDriftError` naming the step and the
    ranks). Every SyncBatchNorm inside the model is told how its gradients are averaged."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {list(STRATEGIES)}")
    if strategy != "local" and comm is None:
        raise ValueError(f"strategy {strategy!r} needs a communicator: wrap(net, {strategy!r}, "
                         "minidist.comm.Communicator())")
    wrapped = STRATEGIES[strategy](model, comm, **options)
    if strategy != "local":
        set_grad_average(model, "sum" if getattr(wrapped, "loss_on_root", False) else wrapped.average)
    return wrapped
