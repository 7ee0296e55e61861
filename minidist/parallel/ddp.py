"""The "ddp" strategy: PyTorch's DistributedDataParallel, bucket by bucket.

At wrap time the parameter names, shapes and dtypes are checked identical on every rank
(phase ``"verify"``; a mismatch raises on every rank, naming the rank, the parameter and
both shapes), then rank 0's parameters and buffers are broadcast (``"init-broadcast"``).

During backward each parameter's post-accumulate-grad hook copies its gradient into its
bucket's flat buffer, scaled by this rank's weight (below). When a bucket's last gradient
arrives the bucket is ready; ready buckets are launched in index order (as PyTorch's
reducer does) as non-blocking ring all-reduces (`minidist.comm.RingAllreduce`: the blocking
ring's schedule and bytes, posted step by step; phase ``"grad-allreduce"``). With
``overlap=True`` they progress while backward goes on: at every later hook the in-flight
rings are advanced as far as their messages allow, and every launch also makes each older
ring complete at least one more step (a bounded wait with the same target on every rank,
so it cannot deadlock, and the overlap is deterministic: a bucket is finished at the
latest when 2(N-1) more buckets have been launched after it, while backward still runs).
Unlike PyTorch, buckets are not rebuilt after the first iteration from the observed order:
they stay in reverse registration order, so a bucket that is ready early (a layer's weight
before its bias) waits for the lower-index ones.
``step()`` launches what is left (with ``overlap=False``: everything, after backward),
waits, writes the averages back into ``.grad`` and runs the optimizer.

Averaging: ``average="samples"`` (default) weights rank r's gradient by n_r / N, its share
of the samples in the global batch, so uneven shards still give the global-batch gradient;
N comes from one small all-reduce of the counts (phase ``"shard-sizes"``) at the first hook.
``average="ranks"`` divides by the number of ranks (PyTorch's rule; no extra message).

Unused parameters: a parameter whose hook did not fire is filled in when the step
finishes (its current ``.grad``, zeros if None), and its bucket is all-reduced then; the
job never hangs. Its ``.grad`` after the step is the average (zeros if no rank used it).

``comm_hook="fp16"``: each bucket is cast to float16 (after the rank's weight is applied)
and all-reduced by the comm layer's ring in float16, travelling and summed as float16
(PyTorch's fp16_compress_hook), halving the bytes; gradients then differ by fp16 rounding.
``no_sync()``: gradients accumulate locally; the next synchronised backward all-reduces
the accumulated sum. ``broadcast_buffers=True``: rank 0's buffers are broadcast at each
synchronised training forward (``"buffer-broadcast"``).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..autograd.function import is_grad_enabled
from ..comm import RingAllreduce, allreduce, ring_allreduce
from .base import ParallelModel, require_samples, sync_initial_state
from .buckets import assign_buckets, bucket_tag
from .flat import FlatLayout

MB = 1024 * 1024
DEFAULT_BUCKET_CAP_MB = 25.0
FIRST_BUCKET_MB = 1.0
COMM_HOOKS = (None, "fp16")
ALGORITHMS = ("ring", "recursive_doubling", "rabenseifner", "auto")


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
    check_replicas=False, record_events=False)``; see the module docstring.

    `algorithm`: "ring" (non-blocking, overlapped) or a blocking all-reduce of
    minidist.comm ("recursive_doubling", "rabenseifner", "auto"), run when the bucket is
    launched. `record_events`: keep ``events``, a list of ``(kind, bucket)`` with kinds
    "ready", "launch", "done" and ``("backward_done", None)`` at ``step()``.
    """

    strategy = "ddp"

    def __init__(self, module, comm, *, bucket_cap_mb: float = DEFAULT_BUCKET_CAP_MB,
                 overlap: bool = True, algorithm: str = "ring", broadcast_buffers: bool = True,
                 comm_hook: str | None = None, average: str = "samples",
                 check_replicas: bool = False, record_events: bool = False):
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
        self.broadcast_buffers = bool(broadcast_buffers)
        self.record_events = bool(record_events)
        self.events = []
        sync_initial_state(module, comm, "DDP")
        # PyTorch: a small first bucket only when the cap is left at its default
        first = FIRST_BUCKET_MB if bucket_cap_mb == DEFAULT_BUCKET_CAP_MB else bucket_cap_mb
        params = [p for p in module.parameters() if p.requires_grad]
        groups = assign_buckets(params, int(bucket_cap_mb * MB), int(first * MB))
        self.buckets = [_Bucket(i, g) for i, g in enumerate(groups)]
        self._where = {id(p): b for b in self.buckets for p in b.layout.tensors}
        self._offset = {id(p): off for b in self.buckets for p, off in zip(b.layout.tensors, b.layout.offsets)}
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad_ready) for p in params]
        self._no_sync = False
        self._armed = False  # a synchronised forward happened: the next backward reduces
        self._scale = None  # this rank's weight for the current step
        self._next_launch = 0

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
        if is_grad_enabled() and not self._no_sync:
            if not self._armed:
                self._arm()
            if self.broadcast_buffers:
                self._broadcast_buffers("linear")
        return super().forward(x, *args, **kwargs)

    def _arm(self) -> None:
        self._armed = True
        self._next_launch = 0
        for b in self.buckets:
            b.pending, b.filled, b.op, b.wire = len(b.layout.tensors), set(), None, None

    def _event(self, kind, bucket) -> None:
        if self.record_events:
            self.events.append((kind, bucket))

    # ---- during backward -------------------------------------------------------------------------
    def _ensure_scale(self) -> float:
        if self._scale is None:
            if self.average == "ranks":
                self._scale = 1.0 / self.comm.size
            else:
                counts = np.array([float(self._samples)])
                with self.comm.phase("shard-sizes"):
                    ring_allreduce(self.comm, counts, "sum")
                self._scale = self._samples / require_samples(float(counts[0]), "DDP")
        return self._scale

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
                raise RuntimeError("DDP: a second backward() reached a bucket that is already being "
                                   "all-reduced; accumulate inside model.no_sync(), or call step() "
                                   "between backward passes")
            bucket.filled.discard(id(p))
            bucket.pending += 1
        self._ensure_scale()
        self._fill(bucket, p)
        if bucket.pending == 0:
            self._event("ready", bucket.index)
            if self.overlap:
                self._launch_ready(during_backward=True)
        if self.overlap:
            self._progress()

    def _launch(self, bucket) -> None:
        bucket.wire = bucket.flat.astype(np.float16) if self.comm_hook == "fp16" else bucket.flat
        self._event("launch", bucket.index)
        with self.comm.phase("grad-allreduce"):
            if self.algorithm == "ring":
                tag = bucket_tag(bucket.index)
                bucket.op = RingAllreduce(self.comm, bucket.wire, "sum", tag=tag).start()
            else:  # blocking collectives: done at launch
                allreduce(self.comm, bucket.wire, "sum", self.algorithm)
        if bucket.op is None or bucket.op.done:
            self._event("done", bucket.index)

    def _launch_ready(self, during_backward: bool) -> None:
        launched = False
        while self._next_launch < len(self.buckets) and self.buckets[self._next_launch].pending == 0:
            self._launch(self.buckets[self._next_launch])
            self._next_launch += 1
            launched = True
        if launched and during_backward:
            # buckets launch in index order, so bucket j has seen (launched - 1 - j) later launches;
            # it must have completed that many ring steps: a target every rank shares
            for b in self.buckets[: self._next_launch]:
                if b.op is not None and not b.op.done:
                    if b.op.advance_to(self._next_launch - 1 - b.index):
                        self._event("done", b.index)

    def _progress(self) -> None:
        for b in self.buckets[: self._next_launch]:
            if b.op is not None and not b.op.done and b.op.advance(block=False):
                self._event("done", b.index)

    # ---- the step -------------------------------------------------------------------------------
    def _before_update(self, optimizer) -> None:
        self._event("backward_done", None)
        if not self._armed:  # step() without a synchronised forward: reduce the grads as they are
            self._arm()
        self._ensure_scale()
        for b in self.buckets:  # unused parameters: their current .grad (or zeros) joins now
            if b.pending:
                for p in b.layout.tensors:
                    if id(p) not in b.filled:
                        self._fill(b, p)
        self._launch_ready(during_backward=False)
        for b in self.buckets:
            if b.op is not None and not b.op.done:
                b.op.wait()
                self._event("done", b.index)
        for b in self.buckets:
            result = b.wire.astype(b.flat.dtype) if b.wire is not b.flat else b.flat
            b.layout.unpack_grads(result)
        self._armed = False
        self._scale = None

    def _persistent_comm_bytes(self) -> int:
        wire = sum(b.flat.size * 2 for b in self.buckets) if self.comm_hook == "fp16" else 0
        return sum(b.flat.nbytes for b in self.buckets) + wire
