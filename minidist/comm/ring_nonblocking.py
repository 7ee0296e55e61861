"""`RingAllreduce`: the ring all-reduce of ring.py, posted step by step, so that it can
progress while the caller computes (DDP's buckets during backward).

It runs the very `RingSteps` schedule of the blocking `ring_allreduce`: the same chunks,
the same additions in the same order (partial from the left + own), so the bytes of the
result are identical to the blocking ring's, and the ledger records the same messages
(2(N-1) each way, counts.py's ``"ring_allreduce"``). Only the transport differs: each
step is an ``irecv`` from the left and an ``isend`` to the right; the step is applied,
and the next one posted, when both have completed (`Request.test` or a blocking wait).

Several all-reduces may be in flight at once between the same neighbours as long as each
has its own tag (MPI matches messages by source and tag; two rings on one tag could take
each other's messages): starting one on a tag that another one in flight on the same
communicator still uses raises ValueError. Progress is only made inside `advance` and
`wait`; every rank must eventually drive every ring it started to the end, and blocking
waits on several rings must be made in the same order on every rank.
"""
from __future__ import annotations

import weakref

import numpy as np
from mpi4py import MPI

from .tags import TAG_RING_ALLREDUCE
from .checks import RING_DTYPES, check_array, check_op
from .ring import RingSteps, ring_scratch_count
from .timeline import RingTrace

_tags_in_flight: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # comm -> {tag}


class RingAllreduce:
    r"""``RingAllreduce(comm, x, op="sum", tag=30102)``: a non-blocking ring all-reduce
    of `x`, in place.

    .. math:: x \leftarrow \textstyle\sum_{i=0}^{N-1} x_i \quad(\text{op="mean": } /N)

    ``start()`` posts step 0 and returns the object; ``advance(block=False)`` completes
    every step whose messages have arrived (``block=True``: at least one, waiting for it)
    and returns `done`; ``advance_to(steps)`` blocks until `steps` steps are complete;
    ``wait()`` runs to the end and returns `x`. `done` is True once `x` holds the result
    on this rank, bit-identical to what `ring_allreduce` gives. Do not read or write `x`
    in between. The messages are recorded in the ledger under the phase that was current
    when the object was created. While it runs it holds a receive buffer of one chunk
    of its own (from the communicator's grow-only cache, `Communicator.take_scratch`,
    reported to the ledger as scratch until done), so rings in flight at once never share
    a buffer, and a ring started after another has finished reuses that one's buffer.

    Args:
        comm: the `Communicator`.
        x: C-contiguous, writable; float32, float64, int64 or float16.
        op: "sum" | "mean" | "max" | "min" ("mean" needs a floating dtype).
        tag: the MPI tag of its messages (>= 0), distinct from every other ring in
            flight on `comm`.

    Attributes:
        step (int): steps completed, 0 .. `total_steps` = 2(N-1).
        done (bool): `x` holds the result (at once when N = 1).

    Shape:
        x: any shape, the same shape and dtype on every rank.
    """

    def __init__(self, comm, x: np.ndarray, op: str = "sum", tag: int = TAG_RING_ALLREDUCE):
        check_array(x, dtypes=RING_DTYPES)
        ufunc = check_op(op, x.dtype)
        if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or tag < 0:
            raise ValueError(f"tag must be a non-negative int (got {tag!r})")
        self.comm, self.x, self.op, self.tag = comm, x, op, int(tag)
        self._ufunc = ufunc
        self._steps = None  # built by start(), with a receive buffer of its own
        self._buffer = None
        self.total_steps = 2 * (comm.size - 1)
        self.step = 0
        self.done = comm.size == 1
        self._started = False
        self._requests = ()
        self._phase = comm.current_phase
        self._trace = None  # a RingTrace while comm.timeline records
        self._right, self._left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size

    def __repr__(self) -> str:
        return (f"RingAllreduce(rank={self.comm.rank}, size={self.comm.size}, op={self.op!r}, "
                f"tag={self.tag}, step={self.step}/{self.total_steps}, done={self.done})")

    def start(self) -> "RingAllreduce":
        """Post step 0 (nothing to do when N = 1). Returns `self`."""
        if self._started:
            raise RuntimeError(f"{self!r} was already started; create a new RingAllreduce")
        if not self.done:
            in_flight = _tags_in_flight.setdefault(self.comm, set())
            if self.tag in in_flight:
                raise ValueError(f"tag {self.tag} is already used by a RingAllreduce in flight on "
                                 f"this communicator (rank {self.comm.rank}); give each concurrent "
                                 "ring its own tag, or wait() for the other one first")
            in_flight.add(self.tag)
            comm = self.comm
            if getattr(comm, "timeline", None) is not None:
                self._trace = RingTrace(comm.timeline, self._phase, self.tag, self.x.nbytes)
            flat = self.x if self.x.ndim == 1 else self.x.reshape(-1)
            # its own buffer (reported as scratch) until done: rings in flight never share
            self._buffer = comm.take_scratch(ring_scratch_count(flat.size, comm.size), flat.dtype)
            self._steps = RingSteps(flat, comm.rank, comm.size, self.op, self._ufunc, self._buffer)
            self._post()
            if self._trace is not None:
                self._trace.inside(self._trace.call.enter)  # setting up and posting step 0
        self._started = True
        return self

    def _post(self) -> None:
        send, recv = self._steps.buffers(self.step)
        comm = self.comm
        if self._trace is not None:
            self._trace.posted()
        with comm.phase(self._phase):
            self._requests = (comm.irecv(recv, self._left, self.tag),
                              comm.isend(send, self._right, self.tag))

    def _complete_step(self) -> None:
        self._steps.finish(self.step)
        if self._trace is not None:
            send, recv = self._steps.buffers(self.step)
            self._trace.step_done(self.step, self.total_steps, send.nbytes, recv.nbytes,
                                  self._right, self._left)
        self.step += 1
        if self.step < self.total_steps:
            self._post()
            return
        self.done = True
        self._requests = ()
        self.comm.return_scratch(self._buffer)  # back to the cache for the next ring
        self._buffer = None
        _tags_in_flight[self.comm].discard(self.tag)

    def _ready(self, block: bool) -> bool:
        """Whether both requests of the current step are complete (waiting if `block`)."""
        try:
            if block:
                self.comm.waitall(self._requests)
                return True
            recv, send = self._requests  # test both: each records itself when it completes
            return recv.test() & send.test()
        except MPI.Exception as exc:
            if exc.Get_error_class() == MPI.ERR_TRUNCATE:
                expected = self._steps.buffers(self.step)[1].nbytes
                raise ValueError(f"RingAllreduce: rank {self.comm.rank} received a message from "
                                 f"rank {self._left} larger than the {expected} bytes expected at step "
                                 f"{self.step}; every rank must pass an array of the same shape "
                                 "and dtype") from exc
            raise

    def advance(self, block: bool = False) -> bool:
        """Complete as many steps as are ready, posting each next one (``block``: wait for
        at least one). Returns `done`."""
        if not self._started:
            raise RuntimeError(f"{self!r} has not been started; call start() first")
        trace = self._trace
        start = None if trace is None else trace.now()
        while not self.done and self._ready(block):
            block = False
            self._complete_step()
        if trace is not None:  # the time inside this call: tests, waits, additions, posts
            trace.inside(start)
            if self.done:
                trace.done()
                self._trace = None
        return self.done

    def advance_to(self, steps: int) -> bool:
        """Block until at least `steps` steps are complete (or all are). Returns `done`."""
        while not self.done and self.step < steps:
            self.advance(block=True)
        return self.done

    def wait(self) -> np.ndarray:
        """Run to the end; returns `x`, which then holds the result."""
        self.advance_to(self.total_steps)
        return self.x
