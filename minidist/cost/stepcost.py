"""What one training step of each strategy costs, per rank, predicted from closed forms.

`predict_step` lists, phase by phase, the collectives dp.py, hub.py and ddp.py run for a
model (`describe(module)`, or `dense(n_params)` for one that does not exist here), with
rank 0's and rank 1's exact counts (`minidist.cost.counts`: equal to the ledger to the
byte), predicted seconds (`minidist.cost.costmodel`) and memory (as
`minidist.parallel.memory` measures it). Same work, same charge: dp's in-place sum of the
gathered gradients on rank 0 is timed as hub's linear reduce. The steps (P parameters, B
buffers, t the status tail of `minidist.parallel.tail`: sample count, non-finite flag):

    dp   grad-gather: gather P+t, summed on rank 0 | param-broadcast: bcast P+t | buffers
    hub  buffers (at forward) | grad-reduce: reduce P+t | grad-broadcast: bcast P+t
    ddp  buffers (at forward) | grad-allreduce: one per bucket, t in the last |
         unused-bitmap (find_unused_parameters): one int64 per parameter
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import costmodel
from .counts import message_counts, scratch_bytes
from .layout import assign_buckets, bucket_limits, tail_length

STRATEGIES = ("local", "dp", "hub", "ddp")
OPTIONS = ("bucket_cap_mb", "algorithm", "broadcast", "reduce", "broadcast_buffers", "average",
           "find_unused_parameters", "nonfinite", "loss_on_root", "outputs")
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
    groups = assign_buckets([_Sized(c, d) for c, d in shape.params if c], *bucket_limits(bucket_cap_mb))
    return [(sum(p.data.size for p in g), g[0].data.dtype) for g in groups]


class Call(NamedTuple):
    """One collective of a step: its phase, the collective whose messages it sends (the
    counts and scratch), `count` elements of `dtype`, the algorithm, and `timed_as`, the
    (collective, algorithm) whose time it costs when that differs (dp's gather followed by
    rank 0's in-place sum: a linear reduce's messages and additions)."""

    phase: str
    collective: str
    count: int
    dtype: np.dtype
    algorithm: str | None = None
    timed_as: tuple | None = None
    unit: int = 1  # elements per counted item: a row of outputs under loss_on_root

    def itemsize(self) -> int:
        return self.unit * np.dtype(self.dtype).itemsize

    def counts(self, size: int, rank: int) -> dict:
        """`rank`'s messages and bytes (the closed forms the ledger is checked against)."""
        if self.collective != "gather_rows":
            return message_counts(self.collective, size, rank, self.count, self.itemsize(), 0, self.algorithm)
        rows = [self.count // size + (r < self.count % size) for r in range(size)]  # np.array_split's
        if rank == 0:
            return {"messages_sent": 0, "messages_received": size - 1, "bytes_sent": 0,
                    "bytes_received": (self.count - rows[0]) * self.itemsize()}
        return {"messages_sent": 1, "messages_received": 0, "bytes_sent": rows[rank] * self.itemsize(),
                "bytes_received": 0}

    def seconds(self, size: int, profile, ranks_per_node) -> float:
        timed, alg = self.timed_as or (self.collective, self.algorithm)
        count = -(-self.count // size) if self.collective == "gather_rows" else self.count  # one rank's rows
        return costmodel.predict(timed, size, count * self.itemsize(), profile, alg, ranks_per_node,
                                 np.dtype(self.dtype).itemsize)


def _with_tail(messages: list, size: int, counts: bool, nonfinite: str = "raise", where: int = 0) -> list:
    """[(dtype, elements)] with the status tail (`minidist.parallel.tail`) added to message
    `where` (the first; DDP: the last bucket)."""
    out = list(messages)
    if out:
        dtype, n = out[where]
        out[where] = (dtype, n + tail_length(counts, nonfinite != "ignore"))
    return out


def _counted(strategy, options) -> bool:
    """The sample count rides in the gradient messages (not under dp's loss_on_root)."""
    return options.get("average", "samples") == "samples" and not (strategy == "dp" and options.get("loss_on_root"))


def _gradient_messages(strategy, shape, size, options) -> list:
    """[(dtype, elements)] of the packed gradient messages with their status tail: dp and
    hub one per dtype (flags and tail included), ddp one per bucket (tail on the last)."""
    nonfinite = options.get("nonfinite", "raise")
    if strategy == "ddp":
        buckets = [(d, n) for n, d in ddp_buckets(shape, options.get("bucket_cap_mb", 25.0))]
        return _with_tail(buckets, size, _counted(strategy, options), nonfinite, where=-1)
    return _with_tail(shape.grad_messages(options.get("find_unused_parameters", False)), size,
                      _counted(strategy, options), nonfinite)


def _output_calls(shape, options) -> list:
    """dp's loss_on_root with ``outputs=(global rows, elements per row)``: the outputs
    gathered to rank 0 (np.array_split shards) and their gradients scattered back."""
    if not (options.get("loss_on_root") and options.get("outputs")):
        return []
    rows, per_row = (int(v) for v in options["outputs"])
    dtype = shape.by_dtype("all_params")[0][0]
    return [Call("output-gather", "gather_rows", rows, dtype, None, ("gather_to_root", None), per_row),
            Call("output-grad-scatter", "scatter", rows, dtype, unit=per_row)]


def _calls(strategy, shape, size, **options) -> list:
    """The step's collectives (`Call`s), in order, as dp.py, hub.py and ddp.py run them.
    `options` are `predict_step`'s."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES} (got {strategy!r})")
    if strategy == "local" or size == 1:
        return []
    broadcast, reduce = options.get("broadcast", "linear"), options.get("reduce", "linear")
    grads = _gradient_messages(strategy, shape, size, options)
    buffers = [Call("buffer-broadcast", "broadcast", n, d, broadcast) for d, n in shape.by_dtype("buffers")]
    early = buffers if options.get("broadcast_buffers", True) else []  # hub and ddp: at forward
    if strategy == "dp":
        nonfinite = options.get("nonfinite", "raise")
        params = shape.by_dtype("all_params")
        if _counted(strategy, options) or nonfinite != "ignore":  # the status rides back
            params = _with_tail(params, size, _counted(strategy, options), nonfinite)
        return (_output_calls(shape, options)
                + [Call("grad-gather", "gather_to_root", n, d, None, ("reduce_to_root", "linear")) for d, n in grads]
                + [Call("param-broadcast", "broadcast", n, d, broadcast) for d, n in params] + buffers)
    if strategy == "hub":
        return early + [call for d, n in grads for call in (Call("grad-reduce", "reduce_to_root", n, d, reduce),
                                                            Call("grad-broadcast", "broadcast", n, d, broadcast))]
    algorithm = options.get("algorithm", "ring")
    alg, name = (None, "ring_allreduce") if algorithm == "ring" else (algorithm, "allreduce")
    return (early + [Call("grad-allreduce", name, n, d, alg) for d, n in grads]
            + [Call("unused-bitmap", "ring_allreduce", len(shape.params), np.dtype(np.int64))]
            * bool(options.get("find_unused_parameters")))


def predict_step(strategy: str, size: int, shape: ModelShape, *, profile="shm",
                 ranks_per_node=None, optimizer_slots: int = 1, **options) -> dict:
    """Predicted cost of one training step of `strategy` on `size` ranks.

    Returns ``{"phases": {phase: {"seconds", "rank0": counts, "other": counts}},
    "seconds": total, "rank0": counts, "other": counts, "memory": {"rank0", "other"}}``
    where counts are ``messages_sent, messages_received, bytes_sent, bytes_received``
    (`other` is rank 1's, or zeros when ``size == 1``). `optimizer_slots`: arrays of state
    per parameter (SGD with momentum 1, Adam 2). `options` mirror `wrap`'s:
    ``bucket_cap_mb, algorithm, broadcast, reduce, broadcast_buffers, average,
    find_unused_parameters, nonfinite, loss_on_root``.
    """
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"predict_step: unknown option(s) {sorted(unknown)}; expected some of {OPTIONS}")
    size = int(size)
    phases = {}
    for call in _calls(strategy, shape, size, **options):
        entry = phases.setdefault(call.phase, {"seconds": 0.0, "rank0": dict.fromkeys(_KEYS, 0),
                                               "other": dict.fromkeys(_KEYS, 0)})
        entry["seconds"] += call.seconds(size, profile, ranks_per_node)
        for who, rank in (("rank0", 0), ("other", 1)):
            if rank < size:
                got = call.counts(size, rank)
                for k in _KEYS:
                    entry[who][k] += got[k]
    total = {who: {k: sum(p[who][k] for p in phases.values()) for k in _KEYS}
             for who in ("rank0", "other")}
    return {"strategy": strategy, "size": size, "phases": phases,
            "seconds": sum(p["seconds"] for p in phases.values()),
            "rank0": total["rank0"], "other": total["other"],
            "memory": predict_memory(strategy, size, shape, optimizer_slots=optimizer_slots, **options)}


COLLECTIVE_SCRATCH = ("grad-reduce", "grad-broadcast", "grad-allreduce", "param-broadcast",
                      "buffer-broadcast", "unused-bitmap")  # the phases whose collectives use ledger scratch


def _nbytes(messages) -> list:
    return [int(n) * np.dtype(d).itemsize for d, n in messages]


def predict_memory(strategy: str, size: int, shape: ModelShape, *, optimizer_slots: int = 1,
                   **options) -> dict:
    """Bytes held by rank 0 and by a non-root rank, as `minidist.parallel.memory` measures
    them: parameters + gradients + optimizer state + persistent communication buffers
    (DDP's flat buckets; dp's gather rows: N messages on rank 0, one elsewhere), and
    ``comm_peak``, the step's transient communication memory: the strategy's own buffers
    (hub: its packed messages and the largest result; every strategy: the largest flat
    buffer it broadcasts) plus the collectives' largest scratch (`counts.scratch_bytes`;
    DDP's rings can all be in flight at once, so their scratch adds up: exact with
    ``overlap=False``, an upper bound with overlap). dp's loss_on_root with `outputs`: rank
    0 also holds the gathered outputs and their gradients. `options` are `predict_step`'s."""
    p = shape.param_bytes
    calls = _calls(strategy, shape, size, **options)
    grads = _nbytes(_gradient_messages(strategy, shape, size, options)) if strategy != "local" else []
    broadcast = max([c.count * np.dtype(c.dtype).itemsize for c in calls
                     if c.phase in ("param-broadcast", "buffer-broadcast")], default=0)
    out = {}
    for who, rank in (("rank0", 0), ("other", min(1, size - 1))):
        scratch = [scratch_bytes(c.collective, size, rank, c.count, np.dtype(c.dtype).itemsize, 0, c.algorithm)
                   for c in calls if c.phase in COLLECTIVE_SCRATCH]  # dp gathers into its own rows
        rings = sum(scratch_bytes(c.collective, size, rank, c.count, np.dtype(c.dtype).itemsize)
                    for c in calls if c.collective == "ring_allreduce" and c.phase == "grad-allreduce")
        collective = max([rings] + scratch)  # DDP's rings may all be in flight at once
        held = max(sum(grads) + max(grads, default=0), broadcast) if strategy == "hub" else broadcast
        if rank == 0 and _output_calls(shape, options):  # the outputs and their gradients, even alone
            held = max(held, 2 * sum(c.count * c.itemsize() for c in _output_calls(shape, options)[:1]))
        opt = optimizer_slots * p if (strategy != "dp" or rank == 0 or size == 1) else 0
        buffers = {"ddp": sum(grads), "dp": sum(grads) * (size if rank == 0 else 1)}.get(strategy, 0)
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
