"""What one training step of each strategy costs, per rank, predicted from closed forms.

For a model described by the sizes and dtypes of its parameters and buffers, `predict_step`
lists, phase by phase, the collectives each strategy runs (the same calls, in the same
messages, as dp.py, hub.py and ddp.py), with

* the exact per-rank counts of rank 0 and of a non-root rank (`minidist.comm.counts`, the
  closed forms the ledger is checked against), so a prediction for the run at hand equals
  the ledger to the byte;
* the predicted seconds of each collective (`minidist.comm.costmodel`, alpha-beta-gamma
  with the node-bandwidth term) for a named or calibrated hardware profile;
* the bytes each rank holds (parameters, gradients, optimizer state, communication buffers
  and the peak of the transient ones), as `minidist.parallel.memory` measures them.

`describe(module)` turns a real model into the description; `dense(n_params)` makes one for
a model that does not exist here (a 1.3 B-parameter network on 1024 ranks, say), which is
how a report projects the measured run far past this machine.

The strategies' steps (P = the parameters' elements, B = the buffers'):

    dp   shard-sizes: gather 1 float64 | grad-gather: gather P | param-broadcast: bcast P
         | buffer-broadcast: bcast B                       (rank 0 alone updates)
    hub  shard-sizes: reduce 1 float64 | grad-reduce: reduce P | grad-broadcast: bcast P
         | buffer-broadcast: bcast B (at forward)          (every rank updates)
    ddp  shard-sizes: ring all-reduce 1 float64 | grad-allreduce: one all-reduce per bucket
         | buffer-broadcast: bcast B (at forward) | unused-bitmap (find_unused_parameters):
         ring all-reduce of one int64 per parameter        (every rank updates)

With ``find_unused_parameters=True`` dp's grad-gather and hub's grad-reduce and
grad-broadcast carry one more element per parameter of each dtype (the used flags).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import costmodel
from .counts import message_counts, scratch_bytes
from ..parallel.buckets import DEFAULT_BUCKET_CAP_MB, FIRST_BUCKET_MB, assign_buckets

MB = 1024 * 1024
STRATEGIES = ("local", "dp", "hub", "ddp")
_KEYS = ("messages_sent", "messages_received", "bytes_sent", "bytes_received")


@dataclass
class ModelShape:
    """Element counts in registration order, with their dtypes: the parameters that train
    (``params``: they have gradients, optimizer state and DDP buckets), the buffers, and the
    frozen parameters (``requires_grad=False``: broadcast with the others, never reduced)."""

    params: list  # [(count, np.dtype)]
    buffers: list = field(default_factory=list)
    frozen: list = field(default_factory=list)

    def by_dtype(self, which: str) -> list:
        """[(dtype, total elements)], one entry per dtype in first-seen order: the flat
        messages `broadcast_tensors` and the gradient layouts send. `which`: "params",
        "buffers", "frozen" or "all_params" (trained and frozen: what dp broadcasts)."""
        entries = self.params + self.frozen if which == "all_params" else getattr(self, which)
        totals = {}
        for count, dtype in entries:
            totals[np.dtype(dtype)] = totals.get(np.dtype(dtype), 0) + int(count)
        return list(totals.items())

    def grad_messages(self, find_unused_parameters: bool = False) -> list:
        """[(dtype, elements)] of the packed gradients dp and hub send, one per dtype: the
        parameters' elements, plus one flag per parameter with `find_unused_parameters`."""
        flags = {}
        for _, dtype in self.params:
            flags[np.dtype(dtype)] = flags.get(np.dtype(dtype), 0) + bool(find_unused_parameters)
        return [(d, n + flags[d]) for d, n in self.by_dtype("params")]

    @property
    def param_bytes(self) -> int:
        """Bytes of the parameters that train."""
        return sum(int(c) * np.dtype(d).itemsize for c, d in self.params)

    @property
    def frozen_bytes(self) -> int:
        return sum(int(c) * np.dtype(d).itemsize for c, d in self.frozen)


def describe(module) -> ModelShape:
    """The `ModelShape` of a real module."""
    params = list(module.parameters())
    return ModelShape([(p.data.size, p.data.dtype) for p in params if p.requires_grad],
                      [(b.data.size, b.data.dtype) for b in module.buffers()],
                      [(p.data.size, p.data.dtype) for p in params if not p.requires_grad])


def dense(n_params: int, dtype=np.float32, n_tensors: int = 1, n_buffers: int = 0) -> ModelShape:
    """A model of `n_params` elements split evenly over `n_tensors` parameters (the split
    only matters for DDP's buckets), with `n_buffers` buffer elements."""
    base, extra = divmod(int(n_params), int(n_tensors))
    params = [(base + (i < extra), np.dtype(dtype)) for i in range(int(n_tensors))]
    return ModelShape(params, [(int(n_buffers), np.dtype(dtype))] if n_buffers else [])


class _Sized:
    """Stands in for a parameter in `assign_buckets` without allocating it."""

    def __init__(self, count, dtype):
        self.data = np.broadcast_to(np.zeros((), dtype), (int(count),))


def ddp_buckets(shape: ModelShape, bucket_cap_mb: float = 25.0) -> list:
    """[(count, dtype)] of DDP's buckets, in launch order, as `DistributedDataParallel`
    groups them (a 1 MiB first bucket when the cap is left at its default)."""
    first = FIRST_BUCKET_MB if bucket_cap_mb == DEFAULT_BUCKET_CAP_MB else bucket_cap_mb
    groups = assign_buckets([_Sized(c, d) for c, d in shape.params if c],
                            int(bucket_cap_mb * MB), int(first * MB))
    return [(sum(p.data.size for p in g), g[0].data.dtype) for g in groups]


def _calls(strategy, shape, size, *, bucket_cap_mb, algorithm, broadcast, reduce,
           broadcast_buffers, average, find_unused_parameters=False):
    """[(phase, collective, count, dtype, algorithm)]: the step's collectives, in order."""
    f64 = np.dtype(np.float64)
    counts = average == "samples"  # weighting by shard size costs one tiny message
    buffers = [("buffer-broadcast", "broadcast", n, d, broadcast)
               for d, n in shape.by_dtype("buffers")]
    if strategy == "local" or size == 1:
        return []
    if strategy == "dp":
        return ([("shard-sizes", "gather_to_root", 1, f64, None)] * counts
                + [("grad-gather", "gather_to_root", n, d, None)
                   for d, n in shape.grad_messages(find_unused_parameters)]
                + [("param-broadcast", "broadcast", n, d, broadcast) for d, n in shape.by_dtype("all_params")]
                + buffers)
    if strategy == "hub":
        return ((buffers if broadcast_buffers else [])
                + [("shard-sizes", "reduce_to_root", 1, f64, reduce)] * counts
                + [call for d, n in shape.grad_messages(find_unused_parameters)
                   for call in (("grad-reduce", "reduce_to_root", n, d, reduce),
                                ("grad-broadcast", "broadcast", n, d, broadcast))])
    if strategy == "ddp":
        alg = None if algorithm == "ring" else algorithm
        name = "ring_allreduce" if algorithm == "ring" else "allreduce"
        return ((buffers if broadcast_buffers else [])
                + [("shard-sizes", "ring_allreduce", 1, f64, None)] * counts
                + [("grad-allreduce", name, n, d, alg) for n, d in ddp_buckets(shape, bucket_cap_mb)]
                + [("unused-bitmap", "ring_allreduce", len(shape.params), np.dtype(np.int64), None)]
                * bool(find_unused_parameters))
    raise ValueError(f"strategy must be one of {STRATEGIES} (got {strategy!r})")


def predict_step(strategy: str, size: int, shape: ModelShape, *, profile="shm",
                 ranks_per_node=None, bucket_cap_mb: float = 25.0, algorithm: str = "ring",
                 broadcast: str = "linear", reduce: str = "linear", broadcast_buffers: bool = True,
                 average: str = "samples", find_unused_parameters: bool = False,
                 optimizer_slots: int = 1) -> dict:
    """Predicted cost of one training step of `strategy` on `size` ranks.

    Returns ``{"phases": {phase: {"seconds", "rank0": counts, "other": counts}},
    "seconds": total, "rank0": counts, "other": counts, "memory": {"rank0", "other"}}``
    where counts are ``messages_sent, messages_received, bytes_sent, bytes_received``
    (`other` is rank 1's, or zeros when ``size == 1``). `optimizer_slots`: arrays of state
    per parameter (SGD with momentum 1, Adam 2). The options mirror `wrap`'s.
    """
    size = int(size)
    phases = {}
    for phase, collective, count, dtype, alg in _calls(
            strategy, shape, size, bucket_cap_mb=bucket_cap_mb, algorithm=algorithm,
            broadcast=broadcast, reduce=reduce, broadcast_buffers=broadcast_buffers,
            average=average, find_unused_parameters=find_unused_parameters):
        entry = phases.setdefault(phase, {"seconds": 0.0, "rank0": dict.fromkeys(_KEYS, 0),
                                          "other": dict.fromkeys(_KEYS, 0)})
        itemsize = np.dtype(dtype).itemsize
        entry["seconds"] += costmodel.predict(collective, size, count * itemsize, profile,
                                              alg, ranks_per_node, itemsize)
        for who, rank in (("rank0", 0), ("other", 1)):
            if rank < size:
                got = message_counts(collective, size, rank, count, itemsize, 0, alg)
                for k in _KEYS:
                    entry[who][k] += got[k]
    total = {who: {k: sum(p[who][k] for p in phases.values()) for k in _KEYS}
             for who in ("rank0", "other")}
    return {"strategy": strategy, "size": size, "phases": phases,
            "seconds": sum(p["seconds"] for p in phases.values()),
            "rank0": total["rank0"], "other": total["other"],
            "memory": predict_memory(strategy, size, shape, bucket_cap_mb=bucket_cap_mb,
                                     optimizer_slots=optimizer_slots, algorithm=algorithm,
                                     broadcast=broadcast, reduce=reduce,
                                     broadcast_buffers=broadcast_buffers, average=average,
                                     find_unused_parameters=find_unused_parameters)}


def predict_memory(strategy: str, size: int, shape: ModelShape, *, bucket_cap_mb: float = 25.0,
                   optimizer_slots: int = 1, **options) -> dict:
    """Bytes held by rank 0 and by a non-root rank, as `minidist.parallel.memory` measures
    them: parameters + gradients + optimizer state + persistent communication buffers
    (DDP's flat buckets), and ``comm_peak``, the step's transient communication memory:
    the strategy's own largest buffer (dp: rank 0 holds all N gradients plus their average;
    hub: the packed gradients and the result; the flat buffers it broadcasts) plus the
    collectives' largest scratch (`counts.scratch_bytes`; DDP's rings can all be in flight
    at once, so their scratch adds up: exact with ``overlap=False``, an upper bound with
    overlap). `options` are `predict_step`'s (algorithms, broadcast_buffers, average)."""
    p = shape.param_bytes
    # dp and hub pack each dtype's gradients (and, with find_unused_parameters, the flags)
    layouts = [n * np.dtype(d).itemsize
               for d, n in shape.grad_messages(options.get("find_unused_parameters", False))]
    buffer_layouts = [n * np.dtype(d).itemsize for d, n in shape.by_dtype("buffers")]
    largest, largest_buffers = max(layouts, default=0), max(buffer_layouts, default=0)
    largest_all = max((n * np.dtype(d).itemsize for d, n in shape.by_dtype("all_params")), default=0)
    calls = _calls(strategy, shape, size, bucket_cap_mb=bucket_cap_mb,
                   algorithm=options.get("algorithm", "ring"), broadcast=options.get("broadcast", "linear"),
                   reduce=options.get("reduce", "linear"),
                   broadcast_buffers=options.get("broadcast_buffers", True),
                   average=options.get("average", "samples"),
                   find_unused_parameters=options.get("find_unused_parameters", False))
    out = {}
    for who, rank in (("rank0", 0), ("other", min(1, size - 1))):
        scratch = [scratch_bytes(c, size, rank, n, np.dtype(d).itemsize, 0, alg)
                   for _, c, n, d, alg in calls]
        # DDP's rings can all be in flight at once; the blocking algorithms run one at a time
        in_flight = options.get("algorithm", "ring") == "ring"
        rings = sum(sb for sb, (phase, *_) in zip(scratch, calls) if phase == "grad-allreduce")
        collective = max([rings if in_flight else 0] + scratch, default=0)
        if strategy == "dp":  # (even alone: the step packs and gathers all the same)
            held = max(largest * (size + 1 if rank == 0 else 1),
                       max(largest_all, largest_buffers) if size > 1 else 0)
        elif strategy == "hub":
            held = max(2 * largest, largest_buffers if size > 1 else 0)
        elif strategy == "ddp" and size > 1:
            held = largest_buffers if options.get("broadcast_buffers", True) else 0
        else:
            held = 0
        opt = optimizer_slots * p if (strategy != "dp" or rank == 0 or size == 1) else 0
        buffers = p if strategy == "ddp" else 0  # DDP's flat buckets live across steps
        total = 2 * p + shape.frozen_bytes + opt + buffers
        out[who] = {"parameters": p + shape.frozen_bytes, "gradients": p, "optimizer": opt, "comm_buffers": buffers,
                    "comm_peak": held + collective, "total": total, "peak": total + held + collective}
    return out


def projection(shape: ModelShape, sizes=(2, 8, 64, 512, 4096), strategies=("dp", "hub", "ddp"),
               **options) -> list:
    """Rows ``{strategy, size, seconds, rank0_bytes, other_bytes, rank0_peak_bytes}`` of
    predicted per-step communication for each strategy and rank count."""
    rows = []
    for strategy in strategies:
        for n in sizes:
            cost = predict_step(strategy, n, shape, **options)
            rows.append({"strategy": strategy, "size": n, "seconds": cost["seconds"],
                         "rank0_bytes": cost["rank0"]["bytes_sent"] + cost["rank0"]["bytes_received"],
                         "other_bytes": cost["other"]["bytes_sent"] + cost["other"]["bytes_received"],
                         "rank0_peak_bytes": cost["memory"]["rank0"]["peak"]})
    return rows
