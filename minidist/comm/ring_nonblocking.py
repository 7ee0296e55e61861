"""`RingAllreduce`: the ring all-reduce of ring.py, posted step by step, so that it can
progress while the caller computes (DDP's buckets during backward).

It runs the very `ring_schedule` of the blocking `ring_allreduce`: the same chunks and
additions in the same order, so the same bytes and the same ledger (2(N-1) messages each
way). Each step is an ``irecv`` from the left and an ``isend`` to the right, applied (and
the next one posted) once both have completed. Several rings may be in flight between the
same neighbours if each has its own tag (MPI matches by source and tag): a tag already in
flight on the communicator raises ValueError. Progress happens only inside `advance` and
`wait`; every rank must drive every ring it started to the end, and make its blocking
waits on several rings in the same order. Debug mode does not check these rings (ranks
may start them in any order): the wrapped model's ``step()`` is checked instead.
"""
from __future__ import annotations

import weakref

import numpy as np

from .checks import RING_DTYPES, check_array, check_op, mismatch_error
from .ring import combine, ring_scratch_count, schedule, wire
from .tags import TAG_RING_ALLREDUCE
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
        self._flat = x.reshape(-1)
        self._schedule = ()  # built by start(): [(send, recv, reduce)] per step
        self._buffer = None  # a receive buffer of its own while it runs
        self._incoming = None  # where the current step's message lands
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
            comm, flat = self.comm, self._flat
            if getattr(comm, "timeline", None) is not None:
                self._trace = RingTrace(comm.timeline, self._phase, self.tag, self.x.nbytes)
            # its own buffer (reported as scratch) until done: rings in flight never share
            self._buffer = comm.take_scratch(ring_scratch_count(flat.size, comm.size), flat.dtype)
            self._schedule = schedule(comm.size, comm.rank, flat.size)
            self._post()
            if self._trace is not None:
                self._trace.inside(self._trace.call.enter)  # setting up and posting step 0
        self._started = True
        return self

    def _post(self) -> None:
        send, recv, reduce = self._schedule[self.step]
        flat, comm = self._flat, self.comm
        self._incoming = self._buffer[: recv.stop - recv.start] if reduce else flat[recv]
        if self._trace is not None:
            self._trace.posted()
        with comm.phase(self._phase):
            self._requests = (comm.irecv(wire(self._incoming), self._left, self.tag),
                              comm.isend(wire(flat[send]), self._right, self.tag))

    def _complete_step(self) -> None:
        send, recv, reduce = self._schedule[self.step]
        arrived = self._requests[0].posted[2]
        if arrived != self._incoming.nbytes:
            raise mismatch_error("RingAllreduce", self.comm.rank, self._left, arrived,
                                 self._incoming.nbytes)
        if reduce:  # as in ring_allreduce: partial from the left + our part
            own = self._flat[recv]
            combine(self._ufunc, self._incoming, own, out=own)
            if self.step == self.comm.size - 2 and self.op == "mean":  # chunk `rank`, final here
                np.divide(own, self.comm.size, out=own)
        if self._trace is not None:
            sent = (send.stop - send.start) * self._flat.itemsize
            self._trace.step_done(self.step, self.total_steps, sent, self._incoming.nbytes,
                                  self._right, self._left)
        self.step += 1
        if self.step < self.total_steps:
            self._post()
            return
        self.done = True
        self._requests = ()
        self.comm.return_scratch(self._buffer)  # back to the cache for the next ring
        self._buffer = self._incoming = None
        _tags_in_flight[self.comm].discard(self.tag)

    def _ready(self, block: bool) -> bool:
        """Whether both requests of the current step are complete (waiting if `block`; a
        message of the wrong size raises ValueError, watchdog.py)."""
        if block:
            self.comm.waitall(self._requests)
            return True
        recv, send = self._requests  # test both: each records itself when it completes
        return recv.test() & send.test()

    def advance(self, block: bool = False) -> bool:
        """Complete as many steps as are ready, posting each next one (``block``: wait for
        at least one). Returns `done`."""
        if not self._started:
            raise RuntimeError(f"{self!r} has not been started; call start() first")
        comm, named = self.comm, self.comm.operation is None
        if named:  # what the watchdog names if a wait here never ends
            comm.operation = f"RingAllreduce (tag {self.tag}, step {self.step}/{self.total_steps})"
        trace = self._trace
        start = None if trace is None else trace.now()
        try:
            while not self.done and self._ready(block):
                block = False
                self._complete_step()
        finally:
            if named:
                comm.operation = None
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
