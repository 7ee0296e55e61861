"""The "ddp" strategy: PyTorch's DistributedDataParallel, bucket by bucket.

At wrap time the parameter names, shapes and dtypes are checked identical on every rank
(phase ``"verify"``; a mismatch raises on every rank, naming the rank, the parameter and
both shapes), then rank 0's parameters and buffers are broadcast (``"init-broadcast"``).

During backward each parameter's post-accumulate-grad hook copies its gradient into its
bucket's flat buffer, scaled by this rank's weight (below). When a bucket's last gradient
arrives the bucket is ready; ready buckets are launched in index order (as PyTorch's
reducer does) as non-blocking ring all-reduces (`minidist.comm.RingAllreduce`: the blocking
ring's schedule and bytes, posted step by step; phase ``"grad-allreduce"``). With
``overlap=True`` they progress while backward goes on: at every later hook each ring in
flight completes the steps whose messages have arrived, without ever waiting. ``step()``
launches what is left (with ``overlap=False``: everything, after backward) in index order
and waits for the rings bucket by bucket, in index order, writes the averages back into
``.grad`` and runs the optimizer.

Why it never deadlocks. The ranks need not produce gradients in the same order, nor the
same ones (a branch used on some ranks only; a SyncBatchNorm whose own blocking
all-reduce runs in the middle of backward): no rank ever blocks during backward, so every
rank reaches the blocking collectives the model runs, and ``step()``; there every rank has
launched every bucket and waits for them in the same order. Buckets are not rebuilt after
the first iteration from the observed order (unlike PyTorch): they stay in reverse
registration order, so a bucket that is ready early waits for the lower-index ones.

``static_graph=True`` (PyTorch's name) promises that every rank produces the same
gradients in the same order at every iteration. It is checked at the first ``step()``
that follows a synchronised backward (one outside ``no_sync()``):
the order in which the hooks fired is all-gathered (phase ``"verify"``) and, if two ranks
differ, every rank raises the same RuntimeError naming the parameters and the ranks. From
the second iteration on, each launch then also makes every older ring complete at least
one more step (a blocking wait whose target is the same on every rank), so the overlap is
deterministic: bucket j is finished, at the latest, once 2(N-1) more buckets have been
launched after it, while backward still runs; and the blocking all-reduce algorithms
(``algorithm != "ring"``) run at launch, during backward. A rank that breaks the promise
later raises at the hook where its order departs from the first iteration's (the other
ranks may then wait for it: run under ``python -m mpi4py`` so that the error ends the job).
Without the promise, buckets of the blocking algorithms are all-reduced in ``step()``.

Averaging: ``average="samples"`` (default) weights rank r's gradient by n_r / N, its share
of the samples in the global batch, so uneven shards still give the global-batch gradient;
N comes from one small all-reduce of the counts (phase ``"shard-sizes"``) at each
synchronised training forward (training mode with gradients enabled; an eval-mode forward
neither counts nor arms the reducer, as PyTorch) (every rank runs it there, in the same place: never inside
backward, where it could cross a SyncBatchNorm's all-reduce); ``step()`` raises on every
rank when N is 0.
``average="ranks"`` divides by the number of ranks (PyTorch's rule; no extra message).

Unused parameters: a parameter whose hook did not fire is filled in when the step
finishes (its current ``.grad``, zeros if None), and its bucket is all-reduced then; the
job never hangs, whichever ranks used it. Its ``.grad`` after the step is the average
(zeros if no rank used it). With ``find_unused_parameters=True`` (PyTorch's name) ``step()``
also all-reduces a bitmap of the parameters each rank has a gradient for (one int64 per
parameter, phase ``"unused-bitmap"``), and a parameter no rank has one for keeps ``.grad``
None, so the optimizer skips it (no momentum or weight decay step), as without DDP.

``comm_hook="fp16"``: each bucket is cast to float16 (after the rank's weight is applied)
and all-reduced by the comm layer's ring in float16, travelling and summed as float16
(PyTorch's fp16_compress_hook), halving the bytes; gradients then differ by fp16 rounding.
``no_sync()``: gradients accumulate locally; the next synchronised backward all-reduces
the accumulated sum. ``broadcast_buffers=True``: rank 0's buffers are broadcast at each
synchronised training forward (``"buffer-broadcast"``).
"""
from __future__ import annotations

from contextlib import contextmanager
from weakref import WeakKeyDictionary

import numpy as np

from ..autograd.function import is_grad_enabled
from ..comm import RingAllreduce, allreduce, ring_allreduce
from .base import ParallelModel, require_samples, sync_initial_state
from .buckets import DEFAULT_BUCKET_CAP_MB, FIRST_BUCKET_MB, assign_buckets, bucket_tag, check_same_order, instance_tag_base
from .flat import FlatLayout

MB = 1024 * 1024
COMM_HOOKS = (None, "fp16")
ALGORITHMS = ("ring", "recursive_doubling", "rabenseifner", "auto")
_instances = WeakKeyDictionary()  # Communicator -> DDP instances built on it so far


def _next_instance(comm) -> int:
    """This DDP's number on `comm`, in construction order: the same on every rank, since
    every rank wraps the same models in the same order."""
    number = _instances.get(comm, 0)
    _instances[comm] = number + 1
    return number


class _Bucket:
    def __init__(self, index, params):
        self.index = index
        self.layout = FlatLayout(params, params[0].data.dtype)
        self.flat = np.zeros(self.layout.count, self.layout.dtype)
        self.pending = len(params)
        self.filled = set()
        self.wire = None  # what travels: flat itself, or its float16 copy
        self.op = None


class DistributedDataParallel(ParallelModel):
    """``DistributedDataParallel(module, comm, *, bucket_cap_mb=25, overlap=True,
    algorithm="ring", broadcast_buffers=True, comm_hook=None, average="samples",
    static_graph=False, check_replicas=False, record_events=False,
    find_unused_parameters=False)``; see the module docstring.

    `algorithm`: "ring" (non-blocking, overlapped) or a blocking all-reduce of
    minidist.comm ("recursive_doubling", "rabenseifner", "auto"), run when the bucket is
    launched (in ``step()`` unless `static_graph`). `record_events`: keep ``events``, a
    list of ``(kind, bucket)`` with kinds "ready", "launch", "done" and
    ``("backward_done", None)`` at ``step()``.
    """

    strategy = "ddp"

    def __init__(self, module, comm, *, bucket_cap_mb: float = DEFAULT_BUCKET_CAP_MB,
                 overlap: bool = True, algorithm: str = "ring", broadcast_buffers: bool = True,
                 comm_hook: str | None = None, average: str = "samples", static_graph: bool = False,
                 check_replicas: bool = False, record_events: bool = False,
                 find_unused_parameters: bool = False):
        super().__init__(module, comm, average=average, check_replicas=check_replicas)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS} (got {algorithm!r})")
        if comm_hook not in COMM_HOOKS:
            raise ValueError(f"comm_hook must be one of {COMM_HOOKS} (got {comm_hook!r})")
        if comm_hook == "fp16" and algorithm != "ring":
            raise ValueError(f"comm_hook='fp16' needs algorithm='ring' (got algorithm={algorithm!r}): "
                             "of minidist.comm's all-reduces only the ring takes float16")
        if bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be > 0 (got {bucket_cap_mb})")
        self.overlap, self.algorithm, self.comm_hook = bool(overlap), algorithm, comm_hook
        self.broadcast_buffers, self.static_graph = bool(broadcast_buffers), bool(static_graph)
        self.record_events = bool(record_events)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.events = []
        sync_initial_state(module, comm, "DDP")
        # each instance on this communicator rings its buckets on its own tags
        self.instance = _next_instance(comm)
        self._tag_base = instance_tag_base(self.instance, comm.tag_ub)
        # PyTorch: a small first bucket only when the cap is left at its default
        first = FIRST_BUCKET_MB if bucket_cap_mb == DEFAULT_BUCKET_CAP_MB else bucket_cap_mb
        params = [p for p in module.parameters() if p.requires_grad]
        groups = assign_buckets(params, int(bucket_cap_mb * MB), int(first * MB))
        self.buckets = [_Bucket(i, g) for i, g in enumerate(groups)]
        self._where = {id(p): b for b in self.buckets for p in b.layout.tensors}
        self._offset = {id(p): off for b in self.buckets for p, off in zip(b.layout.tensors, b.layout.offsets)}
        self._params = params
        self._index = {id(p): i for i, p in enumerate(params)}
        names = {id(p): n for n, p in module.named_parameters()}
        self._names = [names.get(id(p), f"#{i}") for i, p in enumerate(params)]
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad_ready) for p in params]
        self._no_sync = False
        self._armed = False  # a synchronised forward happened: the next backward reduces
        self._scale = None  # this rank's weight for the current step
        self._total = None  # the global sample count of the current step
        self._next_launch = 0
        self._fired = []  # parameter indices, in the order their hooks fired this iteration
        self._graph = None  # static_graph: the first iteration's order, checked on every rank
        self._restart_peaks()

    # ---- public controls ---------------------------------------------------------------------
    @contextmanager
    def no_sync(self):
        """Within the block, forwards and backwards only accumulate gradients locally; the
        first backward after it all-reduces the accumulated sum (as PyTorch)."""
        previous, self._no_sync = self._no_sync, True
        try:
            yield self
        finally:
            self._no_sync = previous

    def remove_hooks(self) -> None:
        """Detach DDP from the module's parameters (their hooks stay otherwise, so a module
        wrapped again would feed two reducers)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def bucket_sizes(self) -> list[int]:
        """Bytes of each bucket, in launch order."""
        return [b.layout.nbytes for b in self.buckets]

    def bucket_names(self) -> list[list[str]]:
        """Parameter names of each bucket, in launch order."""
        names = {id(p): n for n, p in self.module.named_parameters()}
        return [[names[id(p)] for p in b.layout.tensors] for b in self.buckets]

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x, *args, **kwargs):
        if not is_grad_enabled() or self._no_sync:
            return super().forward(x, *args, **kwargs)
        if self.broadcast_buffers:
            self._broadcast_buffers("linear")
        if not self.training:  # an eval forward (validation) is no training sample: PyTorch
            return self.module(x, *args, **kwargs)  # prepares the reducer only when training
        if not self._armed:
            self._arm()
        self._count_samples(x)
        self._agree_on_scale()  # here, where every rank is: never inside backward
        return self.module(x, *args, **kwargs)

    def _arm(self) -> None:
        self._armed = True
        self._next_launch = 0
        self._fired = []
        for b in self.buckets:
            b.pending, b.filled, b.op, b.wire = len(b.layout.tensors), set(), None, None

    def _event(self, kind, bucket) -> None:
        if self.record_events:
            self.events.append((kind, bucket))

    def _agree_on_scale(self) -> None:
        """This rank's weight in the average (see the module docstring)."""
        if self.average == "ranks":
            self._total, self._scale = float(self.comm.size), 1.0 / self.comm.size
            return
        counts = np.array([float(self._samples)])
        with self.comm.phase("shard-sizes"):
            ring_allreduce(self.comm, counts, "sum")
        self._total = float(counts[0])
        self._scale = self._samples / self._total if self._total > 0 else 0.0  # step() raises then

    # ---- during backward -------------------------------------------------------------------------
    @property
    def _bounded_wait(self) -> bool:
        """static_graph, from the second iteration on (the first one checks the promise)."""
        return self._graph is not None

    def _fill(self, bucket, p) -> None:
        off = self._offset[id(p)]
        dest = bucket.flat[off: off + p.data.size]
        if p.grad is None:
            dest[...] = 0
        else:
            np.multiply(p.grad.reshape(-1), self._scale, out=dest, casting="unsafe")
        bucket.filled.add(id(p))
        bucket.pending -= 1

    def _on_grad_ready(self, p) -> None:
        if not self._armed or self._no_sync:
            return
        bucket = self._where[id(p)]
        if id(p) in bucket.filled:  # a second backward before step(): .grad holds the sum
            if bucket.op is not None or bucket.index < self._next_launch:
                # raised on this rank only: the others may already have finished their rings
                # (no normal-step message comes after them), so run under python -m mpi4py
                raise RuntimeError(f"DDP: on rank {self.comm.rank}, a second backward() reached bucket "
                                   f"{bucket.index}, which is already being all-reduced; accumulate "
                                   "inside model.no_sync(), or call step() between backward passes "
                                   "(the other ranks are not told: run under python -m mpi4py so "
                                   "that this error ends the job)")
            bucket.filled.discard(id(p))
            bucket.pending += 1
        else:
            self._record_firing(self._index[id(p)])
        self._fill(bucket, p)
        if bucket.pending == 0:
            self._event("ready", bucket.index)
            if self.overlap and (self.algorithm == "ring" or self._bounded_wait):
                self._launch_ready(bounded=self._bounded_wait)
        if self.overlap:
            self._progress()

    def _record_firing(self, index: int) -> None:
        position = len(self._fired)
        self._fired.append(index)
        if self._graph is not None and (position >= len(self._graph) or self._graph[position] != index):
            expected = (f"{self._names[self._graph[position]]!r}" if position < len(self._graph)
                        else "no more gradients")
            raise RuntimeError(f"DDP(static_graph=True): on rank {self.comm.rank}, gradient #{position} of "
                               f"this iteration is {self._names[index]!r}, but the first iteration had "
                               f"{expected} there; static_graph promises the same gradients in the same "
                               "order at every iteration: wrap with static_graph=False (the default)")

    def _launch(self, bucket) -> None:
        bucket.wire = bucket.flat.astype(np.float16) if self.comm_hook == "fp16" else bucket.flat
        self._event("launch", bucket.index)
        with self.comm.phase("grad-allreduce"):
            if self.algorithm == "ring":
                tag = bucket_tag(bucket.index, self._tag_base)
                bucket.op = RingAllreduce(self.comm, bucket.wire, "sum", tag=tag).start()
            else:  # blocking collectives: done at launch
                allreduce(self.comm, bucket.wire, "sum", self.algorithm)
        if bucket.op is None or bucket.op.done:
            self._event("done", bucket.index)

    def _launch_ready(self, bounded: bool) -> None:
        """Launch the ready buckets that follow the launched ones; `bounded`: then wait
        until each older ring has completed one step per later launch."""
        launched = False
        while self._next_launch < len(self.buckets) and self.buckets[self._next_launch].pending == 0:
            self._launch(self.buckets[self._next_launch])
            self._next_launch += 1
            launched = True
        if launched and bounded:
            # buckets launch in index order, so bucket j has seen (launched - 1 - j) later
            # launches; it must have completed that many ring steps: a target every rank
            # shares, because (static_graph) every rank launches the same buckets in order
            for b in self.buckets[: self._next_launch]:
                if b.op is not None and not b.op.done:
                    if b.op.advance_to(self._next_launch - 1 - b.index):
                        self._event("done", b.index)

    def _progress(self) -> None:
        """Complete, in every ring in flight, the steps whose messages have arrived; never
        waits."""
        for b in self.buckets[: self._next_launch]:
            if b.op is not None and not b.op.done and b.op.advance(block=False):
                self._event("done", b.index)

    # ---- the step -------------------------------------------------------------------------------
    def _before_update(self, optimizer) -> None:
        self._event("backward_done", None)
        synchronised = self._armed  # the same on every rank: arming happens in a collective forward
        if not self._armed:  # step() without a synchronised forward: reduce the grads as they are
            self._arm()
            self._agree_on_scale()
        for b in self.buckets:  # unused parameters: their current .grad (or zeros) joins now
            if b.pending:
                for p in b.layout.tensors:
                    if id(p) not in b.filled:
                        self._fill(b, p)
        self._launch_ready(bounded=False)  # every rank has now launched every bucket, in index order
        for b in self.buckets:  # ... and waits for them in that same order
            if b.op is not None and not b.op.done:
                b.op.wait()
                self._event("done", b.index)
        fired, self._armed = self._fired, False
        total, self._scale, self._total = self._total, None, None
        if self.static_graph and self._graph is None and synchronised:
            # the graph is learnt from the first synchronised backward (not from a step after
            # no_sync only, whose hooks did not record anything)
            check_same_order(self.comm, fired, self._names)  # raises on every rank if they differ
            if fired:  # same on every rank once the check passed
                self._graph = fired
        require_samples(total, "DDP")  # every rank has the same total: all raise, or none
        unused = self._globally_unused() if self.find_unused_parameters else []
        for b in self.buckets:
            result = b.wire.astype(b.flat.dtype) if b.wire is not b.flat else b.flat
            b.layout.unpack_grads(result)
        for p in unused:  # no rank has a gradient for it: leave .grad None (the optimizer skips it)
            p.grad = None

    def _globally_unused(self) -> list:
        """The parameters no rank has a gradient for (``.grad`` None everywhere): one ring
        all-reduce of one int64 per parameter (1 where this rank has one), phase
        ``"unused-bitmap"`` (PyTorch's find_unused_parameters' used-map all-reduce)."""
        used = np.array([p.grad is not None for p in self._params], dtype=np.int64)
        if self.comm.size > 1:
            with self.comm.phase("unused-bitmap"):
                ring_allreduce(self.comm, used, "sum")
        return [p for p, count in zip(self._params, used) if count == 0]

    def _persistent_comm_bytes(self) -> int:
        wire = sum(b.flat.size * 2 for b in self.buckets) if self.comm_hook == "fp16" else 0
        return sum(b.flat.nbytes for b in self.buckets) + wire
