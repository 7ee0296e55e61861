"""The "ddp" strategy: PyTorch's DistributedDataParallel, bucket by bucket.

The path of one step, all in this file: each parameter's gradient hook copies its
gradient (times this rank's sample count) into its bucket (`_on_grad_ready`, `_fill`);
a full bucket is launched, in index order, as a non-blocking ring all-reduce (`_launch`)
that progresses during the rest of backward (`_progress`); ``step()`` launches what is
left, waits for every ring in index order, reads the status tail the last bucket carried
(global sample count, how many ranks had non-finite gradients: tail.py), divides, unpacks into
``.grad`` and runs the optimizer (`_before_update`). No rank ever blocks during backward,
so no order of gradients can deadlock. The options that are not the lesson (static_graph,
find_unused_parameters, tag spans, events, the fp16 hook) are in ddp_options.py; the
design notes in docs/ddp.md.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..autograd.function import is_grad_enabled
from ..comm import RingAllreduce, allreduce
from . import ddp_options as opts
from .base import ParallelModel, sync_initial_state
from .buckets import DEFAULT_BUCKET_CAP_MB, assign_buckets, bucket_limits, bucket_tag
from .flat import FlatLayout
from .tail import all_finite


class _Bucket:
    def __init__(self, index, params, extra: int = 0):
        self.index = index
        self.layout = FlatLayout(params, params[0].data.dtype)
        self.flat = np.zeros(self.layout.count + extra, self.layout.dtype)  # extra: the status tail
        self.pending, self.filled = len(params), set()
        self.wire = self.op = None  # what travels (flat, or its fp16 copy); its ring in flight
        self.half = None  # the fp16 hook's float16 copy of flat, kept across steps


class DistributedDataParallel(ParallelModel):
    """``DistributedDataParallel(module, comm, *, bucket_cap_mb=25, overlap=True,
    algorithm="ring", broadcast_buffers=True, comm_hook=None, average="samples",
    static_graph=False, check_replicas=False, record_events=False,
    find_unused_parameters=False, nonfinite="raise")``; see docs/ddp.md. `algorithm`:
    "ring" (non-blocking, overlapped) or a blocking all-reduce of minidist.comm, run when
    the bucket is launched (in ``step()`` unless `static_graph`)."""

    strategy = "ddp"

    def __init__(self, module, comm, *, bucket_cap_mb: float = DEFAULT_BUCKET_CAP_MB,
                 overlap: bool = True, algorithm: str = "ring", broadcast_buffers: bool = True,
                 comm_hook: str | None = None, average: str = "samples", static_graph: bool = False,
                 check_replicas: bool = False, record_events: bool = False,
                 find_unused_parameters: bool = False, nonfinite: str = "raise"):
        opts.check_options(algorithm, comm_hook, bucket_cap_mb, average)  # before the model takes an id
        super().__init__(module, comm, average=average, check_replicas=check_replicas, nonfinite=nonfinite)
        self.overlap, self.algorithm, self.comm_hook = bool(overlap), algorithm, comm_hook
        self.broadcast_buffers, self.static_graph = bool(broadcast_buffers), bool(static_graph)
        self.find_unused_parameters = bool(find_unused_parameters)
        sync_initial_state(module, comm, "DDP")
        self.instance, self._tag_base = opts.next_tag_base(comm)
        self._params = [p for p in module.parameters() if p.requires_grad]
        groups = assign_buckets(self._params, *bucket_limits(bucket_cap_mb))
        # the status tail rides in the last bucket: launched last, once every gradient is in
        self._tail = self._status_tail() if groups else None
        self.buckets = [_Bucket(i, g, self._tail.length * (i == len(groups) - 1)) for i, g in enumerate(groups)]
        self._where = {id(p): (b, off) for b in self.buckets for p, off in zip(b.layout.tensors, b.layout.offsets)}
        self._index = {id(p): i for i, p in enumerate(self._params)}
        names = {id(p): n for n, p in module.named_parameters()}
        self._names = [names[id(p)] for p in self._params]
        self._graph = opts.StaticGraph(static_graph, self._names, comm)
        self._log = opts.EventLog(record_events)
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad_ready) for p in self._params]
        self._no_sync = self._armed = False  # armed: a synchronised forward happened
        self._finite, self._next_launch = True, 0
        self._restart_peaks()

    @property
    def events(self) -> list:
        return self._log.events

    @contextmanager
    def no_sync(self):
        """Within the block, forwards and backwards only accumulate gradients locally; the
        first backward after it all-reduces the accumulated sum (as PyTorch)."""
        previous, self._no_sync = self._no_sync, True
        try:
            yield self
        finally:
            self._no_sync = previous

    def strategy_state(self) -> dict:
        """The base's, and static_graph's learnt gradient order (checked across ranks)."""
        order = self._graph.order
        return {**super().strategy_state(), "static_graph_order": None if order is None else list(order)}

    def load_strategy_state(self, state: dict) -> None:
        super().load_strategy_state(state)
        if state.get("static_graph_order") is not None:
            self._graph.order = [int(i) for i in state["static_graph_order"]]

    def bucket_names(self) -> list[list[str]]:
        """Parameter names of each bucket, in launch order."""
        return [[self._names[self._index[id(p)]] for p in b.layout.tensors] for b in self.buckets]

    def forward(self, x, *args, **kwargs):
        if not is_grad_enabled() or self._no_sync:
            return super().forward(x, *args, **kwargs)
        if self.broadcast_buffers:
            self._broadcast_buffers("linear")
        if not self.training:  # an eval forward (validation) is no training sample: PyTorch
            return self.module(x, *args, **kwargs)  # prepares the reducer only when training
        if not self._armed:
            self._arm()
        return super().forward(x, *args, **kwargs)

    def _arm(self) -> None:
        self._armed, self._finite, self._next_launch, self._graph.fired = True, True, 0, []
        for b in self.buckets:
            b.pending, b.filled, b.op, b.wire = len(b.layout.tensors), set(), None, None

    # ---- during backward: hook -> bucket -> ring ---------------------------------------------
    def _on_grad_ready(self, p) -> None:
        if not self._armed or self._no_sync:
            return
        bucket, _ = self._where[id(p)]
        if id(p) not in bucket.filled:
            self._graph.record(self._index[id(p)])
        elif bucket.op is not None or bucket.index < self._next_launch:  # raised on this rank only
            raise RuntimeError(f"DDP: on rank {self.comm.rank}, a second backward() reached bucket "
                               f"{bucket.index}, which is already being all-reduced; accumulate inside "
                               "model.no_sync(), or call step() between backward passes (raised on this "
                               "rank only: in a job of several ranks it ends the whole job)")
        else:  # a second backward before launch: .grad holds the sum, refill it
            bucket.filled.discard(id(p))
            bucket.pending += 1
        self._fill(bucket, p)
        if bucket.pending == 0:
            self._log("ready", bucket.index)
            if self.overlap and (self.algorithm == "ring" or self._graph.bounded):
                self._launch_ready(bounded=self._graph.bounded)
        if self.overlap:
            self._progress()

    def _fill(self, bucket, p) -> None:
        """``.grad`` times this rank's weight (its sample count, or 1/N under
        ``average="ranks"``) into the bucket; zeros for a parameter without a gradient."""
        _, off = self._where[id(p)]
        dest = bucket.flat[off: off + p.data.size]
        weight = float(self._samples) if self.average == "samples" else 1.0 / self.comm.size
        if p.grad is None:
            dest[...] = 0
        else:
            np.multiply(p.grad.reshape(-1), weight, out=dest, casting="unsafe")
        bucket.filled.add(id(p))
        bucket.pending -= 1

    def _launch(self, bucket) -> None:
        wire, count = opts.to_wire(bucket.flat, self.comm_hook, bucket.half), bucket.layout.count
        bucket.half = wire if wire is not bucket.flat else None
        if self.nonfinite != "ignore":
            self._finite = self._finite and all_finite(wire[:count])
        if bucket.index == len(self.buckets) - 1:  # launched last: every other bucket is checked
            self._write_tail(self._tail, wire[count:], self._finite)
        bucket.wire = wire
        self._log("launch", bucket.index)
        with self.comm.phase("grad-allreduce"):
            if self.algorithm == "ring":
                tag = bucket_tag(bucket.index, self._tag_base)
                bucket.op = RingAllreduce(self.comm, wire, "sum", tag=tag).start()
            else:  # blocking collectives: done at launch
                allreduce(self.comm, wire, "sum", self.algorithm)
        if bucket.op is None or bucket.op.done:
            self._log("done", bucket.index)

    def _launch_ready(self, bounded: bool) -> None:
        """Launch, in index order, the ready buckets that follow the launched ones."""
        start = self._next_launch
        while self._next_launch < len(self.buckets) and self.buckets[self._next_launch].pending == 0:
            self._launch(self.buckets[self._next_launch])
            self._next_launch += 1
        if bounded and self._next_launch > start:
            self._graph.bound(self.buckets, self._next_launch, self._log)

    def _progress(self) -> None:
        """Complete, in every ring in flight, the steps whose messages have arrived; never waits."""
        for b in self.buckets[: self._next_launch]:
            if b.op is not None and not b.op.done and b.op.advance(block=False):
                self._log("done", b.index)

    # ---- step(): wait -> unpack (then the base class runs the optimizer) -----------------------
    def _before_update(self, optimizer) -> None:
        self._log("backward_done", None)
        synchronised = self._armed  # the same on every rank: arming happens in a collective forward
        if not self._armed:  # step() without a synchronised forward: reduce the grads as they are
            self._arm()
        for b in self.buckets:  # unused parameters: their current .grad (or zeros) joins now
            for p in [p for p in b.layout.tensors if id(p) not in b.filled]:
                self._fill(b, p)
        self._launch_ready(bounded=False)  # every rank has now launched every bucket, in index order
        for b in self.buckets:  # ... and waits for them in that same order
            if b.op is not None and not b.op.done:
                b.op.wait()
                self._log("done", b.index)
        self._armed = False
        self._graph.learn(synchronised)
        self._unpack([opts.from_wire(b.wire, b.flat) for b in self.buckets])

    def _unpack(self, results) -> None:
        """Act on the summed status tail (the same on every rank: all raise, all skip, or
        none), then divide by the global sample count and write ``.grad``."""
        if not results:
            return
        total, nonfinite = self._tail.read(results[-1][self.buckets[-1].layout.count:])
        self._judge(total, nonfinite)
        if self._skip:
            return
        unused = opts.globally_unused(self.comm, self._params) if self.find_unused_parameters else []
        for b, result in zip(self.buckets, results):
            b.layout.unpack_grads(result[:b.layout.count], total if self.average == "samples" else None)
        for p in unused:  # no rank has a gradient for it: .grad stays None (the optimizer skips it)
            p.grad = None

    def _persistent_comm_bytes(self) -> int:
        wire = sum(b.flat.size * 2 for b in self.buckets) if self.comm_hook == "fp16" else 0
        return sum(b.flat.nbytes for b in self.buckets) + wire
