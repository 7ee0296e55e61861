"""`Communicator`: point-to-point messages on NumPy arrays, each one recorded in a ledger.

Every byte minidist moves between ranks goes through the buffer calls here (``Send``,
``Recv``, ``Sendrecv``, ``Isend``, ``Irecv`` of mpi4py on NumPy arrays; never pickled
objects), so the `Ledger` sees every message: phase, peer, direction, bytes, and the
seconds spent inside the call. The collectives (ring.py, rooted.py, allreduce.py) are
written on top of these calls alone.

Failing together. An exception on one rank must not leave the others waiting forever:

* run scripts as ``mpiexec -n 4 python -m mpi4py script.py``: mpi4py then calls
  ``MPI_Abort`` on an uncaught exception, which ends every rank (the recommended way);
* or wrap the work in ``with comm.fail_together(): ...``, which prints the error with the
  rank and aborts the job; it works under a plain ``mpiexec -n 4 python script.py`` too;
* or call ``comm.abort("what went wrong")`` yourself.

Scratch: the collectives take their receive buffers from the communicator's cache
(`take_scratch` / `return_scratch`): grow-only byte buffers kept between calls, so that a
large all-reduce does not fault a fresh buffer in on every call. A buffer serves one
collective at a time (non-blocking rings in flight each hold their own); the ledger counts
a buffer as scratch only while a collective uses it.

A Communicator is not thread-safe: use it from one thread at a time (give a background
thread its own, e.g. ``Communicator(comm.mpi.Dup())``).
"""
from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from time import perf_counter

import numpy as np
from mpi4py import MPI

from .allreduce import allreduce
from .tags import TAG_BARRIER
from .ledger import DEFAULT_PHASE, RECV, SEND, Ledger
from .ring import ring_allgather

_BYTE = MPI.BYTE
_EMPTY = np.empty(0, dtype=np.uint8)


def _raise_if_truncated(exc: Exception, rank: int, source: int, buf: np.ndarray) -> None:
    """A truncated message means the ranks disagree on sizes: say so in plain words."""
    if exc.Get_error_class() == MPI.ERR_TRUNCATE:
        raise ValueError(f"rank {rank}: the message from rank {source} is larger than the "
                         f"receive buffer ({buf.nbytes} bytes, dtype {buf.dtype}); every rank "
                         "must pass an array of the same shape and dtype") from exc


class Request:
    """A pending `Communicator.isend` / `irecv`. `wait()` blocks until it completes and
    records the message (bytes, and the seconds spent posting plus waiting) under the
    phase that was current when it was posted."""

    __slots__ = ("_comm", "_req", "_phase", "_peer", "_direction", "_nbytes", "_seconds", "done")

    def __init__(self, comm, req, phase, peer, direction, nbytes, seconds):
        self._comm, self._req, self._phase = comm, req, phase
        self._peer, self._direction, self._nbytes, self._seconds = peer, direction, nbytes, seconds
        self.done = False

    def wait(self) -> None:
        if self.done:
            return
        status = MPI.Status()
        t0 = perf_counter()
        self._req.Wait(status)
        self._finish(status, perf_counter() - t0)

    def test(self) -> bool:
        """True if the request has completed (and then records it); never blocks. The
        seconds spent testing are added to the message's."""
        if self.done:
            return True
        status = MPI.Status()
        t0 = perf_counter()
        completed = self._req.Test(status)
        if completed:
            self._finish(status, perf_counter() - t0)
        else:
            self._seconds += perf_counter() - t0
        return bool(completed)

    def _finish(self, status, seconds: float) -> None:
        peer, nbytes = self._peer, self._nbytes
        if self._direction == RECV:  # the true size and sender of what arrived
            nbytes = status.Get_count(_BYTE)
            peer = status.Get_source() if peer < 0 else peer
        self._comm.ledger.record(self._phase, peer, self._direction, nbytes, self._seconds + seconds)
        self.done = True


class _PhaseScope:
    """The context manager of `Communicator.phase`: a plain class, several times cheaper
    than a @contextmanager generator (the non-blocking ring enters one per step)."""

    __slots__ = ("_comm", "_name", "_previous")

    def __init__(self, comm, name: str):
        self._comm, self._name, self._previous = comm, name, None

    def __enter__(self):
        self._previous, self._comm._phase = self._comm._phase, self._name
        return self._comm

    def __exit__(self, *exc_info) -> bool:
        self._comm._phase = self._previous
        return False


class Communicator:
    """``Communicator(mpi_comm=None, detailed=False)`` wraps an mpi4py communicator
    (``MPI.COMM_WORLD`` by default; a plain ``python script.py`` is a world of size 1).

    Attributes:
        rank (int), size (int): this process's rank and the number of ranks.
        ledger (Ledger): this rank's record of messages and scratch memory.
        mpi (mpi4py.MPI.Comm): the raw communicator (for the reference MPI calls).

    Point-to-point calls take C-contiguous NumPy arrays; `recv` and `sendrecv` return the
    number of bytes that arrived. Tags default to 0; the collectives use tags >= 30000.
    """

    timeline = None  # a timeline.Timeline records collective calls and spans when set

    def __init__(self, mpi_comm=None, detailed: bool = False):
        self.mpi = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank = self.mpi.Get_rank()
        self.size = self.mpi.Get_size()
        self.ledger = Ledger(detailed)
        self._phase = DEFAULT_PHASE
        self._status = MPI.Status()  # reused by the blocking calls (one thread at a time)
        self._idle_scratch: list[np.ndarray] = []  # idle cached buffers (views of uint8 .base)

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, phase={self._phase!r})"

    # ---- phases --------------------------------------------------------------------------
    @property
    def current_phase(self) -> str:
        return self._phase

    def phase(self, name: str) -> "_PhaseScope":
        """``with comm.phase("grad-allreduce"): ...`` records the messages of the block
        under `name` (``as`` gives the communicator). Nestable: the previous phase comes
        back when the block exits, even by an exception."""
        return _PhaseScope(self, str(name))

    # ---- what the layers above need, so that only minidist.comm imports mpi4py ------------
    ANY_SOURCE = MPI.ANY_SOURCE

    @property
    def tag_ub(self) -> int:
        """The largest tag this MPI library accepts (MPI_TAG_UB, at least 32767)."""
        value = self.mpi.Get_attr(MPI.TAG_UB)
        return int(value) if value else 32767

    def ranks_on_node(self) -> int:
        """How many ranks of this communicator share this rank's node (shared memory)."""
        node = self.mpi.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return node.Get_size()
        finally:
            node.Free()

    def allgather(self, x: np.ndarray) -> np.ndarray:
        """`ring_allgather` of `x` over this communicator: (size * x.size,) in rank order."""
        return ring_allgather(self, x)

    def allreduce(self, x: np.ndarray, op: str = "sum", algorithm: str = "auto") -> np.ndarray:
        """`minidist.comm.allreduce` of `x` in place over this communicator."""
        return allreduce(self, x, op, algorithm)

    # ---- blocking point-to-point -----------------------------------------------------------
    def send(self, buf: np.ndarray, dest: int, tag: int = 0) -> None:
        t0 = perf_counter()
        self.mpi.Send(buf, dest, tag)
        self.ledger.record(self._phase, dest, SEND, buf.nbytes, perf_counter() - t0)

    def recv(self, buf: np.ndarray, source: int, tag: int = 0) -> int:
        """Receive into `buf` (at most ``buf.nbytes``); returns the bytes that arrived."""
        status = self._status
        t0 = perf_counter()
        try:
            self.mpi.Recv(buf, source, tag, status)
        except MPI.Exception as exc:
            _raise_if_truncated(exc, self.rank, source, buf)
            raise
        seconds = perf_counter() - t0
        nbytes = status.Get_count(_BYTE)
        self.ledger.record(self._phase, source if source >= 0 else status.Get_source(),
                           RECV, nbytes, seconds)
        return nbytes

    def sendrecv(self, sendbuf: np.ndarray, dest: int, recvbuf: np.ndarray, source: int,
                 tag: int = 0) -> int:
        """Send `sendbuf` to `dest` while receiving into `recvbuf` from `source` (no
        deadlock whatever the order); returns the bytes received. Its seconds are recorded
        on the receive side only."""
        status = self._status
        t0 = perf_counter()
        try:
            self.mpi.Sendrecv(sendbuf, dest, tag, recvbuf, source, tag, status)
        except MPI.Exception as exc:
            _raise_if_truncated(exc, self.rank, source, recvbuf)
            raise
        seconds = perf_counter() - t0
        nbytes = status.Get_count(_BYTE)
        self.ledger.record_exchange(self._phase, dest, sendbuf.nbytes,
                                    source if source >= 0 else status.Get_source(), nbytes, seconds)
        return nbytes

    # ---- non-blocking ------------------------------------------------------------------
    def isend(self, buf: np.ndarray, dest: int, tag: int = 0) -> Request:
        """Start sending `buf`; do not touch it until the request's `wait()` returns."""
        t0 = perf_counter()
        req = self.mpi.Isend(buf, dest, tag)
        return Request(self, req, self._phase, dest, SEND, buf.nbytes, perf_counter() - t0)

    def irecv(self, buf: np.ndarray, source: int, tag: int = 0) -> Request:
        """Start receiving into `buf`; it holds the message once `wait()` returns."""
        t0 = perf_counter()
        req = self.mpi.Irecv(buf, source, tag)
        return Request(self, req, self._phase, source, RECV, buf.nbytes, perf_counter() - t0)

    def waitall(self, requests) -> None:
        """Wait for every request; the seconds of the wait are shared equally among the
        requests still pending."""
        pending = [r for r in requests if not r.done]
        if not pending:
            return
        statuses = [MPI.Status() for _ in pending]
        t0 = perf_counter()
        MPI.Request.Waitall([r._req for r in pending], statuses)
        share = (perf_counter() - t0) / len(pending)
        for r, status in zip(pending, statuses):
            r._finish(status, share)

    # ---- scratch: cached, grow-only receive buffers -----------------------------------------
    def take_scratch(self, count: int, dtype: np.dtype) -> np.ndarray:
        """A 1-D array of `count` elements of `dtype` (an np.dtype; uninitialised) for a
        collective's receive buffer, reported to the ledger as ``count * itemsize`` bytes
        of scratch until `return_scratch`.

        It is carved from a cache of byte buffers kept between calls, so that a large
        collective does not page-fault a fresh buffer in on every call (glibc hands big
        freed blocks back to the OS). Each buffer serves one user at a time: the smallest
        idle one that is large enough; if none is, the largest idle one is replaced by a
        larger one (the cache only grows); if none is idle, a new one joins the cache. So
        several non-blocking rings in flight hold different buffers, and the cache holds
        as many buffers as were ever in use at once. `scratch_cache_bytes` says how much it
        holds; `drop_scratch_cache` frees it."""
        nbytes = count * dtype.itemsize
        idle = self._idle_scratch
        if len(idle) == 1:  # the usual case, kept short
            last = idle[0]
            if last.size == count and last.dtype == dtype:  # the same request as last time
                self.ledger.alloc(nbytes)
                return idle.pop()
            buf = idle.pop().base if last.base.nbytes >= nbytes else self._fitting_scratch(nbytes)
        else:
            buf = self._fitting_scratch(nbytes)
        self.ledger.alloc(nbytes)
        return np.ndarray(count, dtype, buf)  # its .base is `buf`, the cached bytes

    def _fitting_scratch(self, nbytes: int) -> np.ndarray:
        """Remove from the cache and return the smallest idle byte buffer of at least
        `nbytes`; if none is that large, drop the largest idle one and allocate afresh."""
        idle = self._idle_scratch
        fits = [i for i, a in enumerate(idle) if a.base.nbytes >= nbytes]
        if fits:
            return idle.pop(min(fits, key=lambda i: idle[i].base.nbytes)).base
        if idle:  # grow-only: the largest idle buffer makes way for a larger one
            idle.pop(max(range(len(idle)), key=lambda i: idle[i].base.nbytes))
        return np.empty(nbytes, np.uint8)

    def return_scratch(self, array: np.ndarray) -> None:
        """Give back an array from `take_scratch` (once); the ledger's scratch drops by its
        bytes, and its buffer waits in the cache for the next collective."""
        self.ledger.free(array.nbytes)
        self._idle_scratch.append(array)  # kept typed: the next same-sized take reuses it

    @property
    def scratch_cache_bytes(self) -> int:
        """Bytes of receive buffers the cache holds idle between calls (not in the ledger:
        it counts scratch only while a collective uses it)."""
        return sum(a.base.nbytes for a in self._idle_scratch)

    def drop_scratch_cache(self) -> None:
        """Free the idle cached receive buffers (the next collective allocates afresh)."""
        self._idle_scratch.clear()

    # ---- synchronisation and failure -----------------------------------------------------
    def barrier(self) -> None:
        """Dissemination barrier from point-to-point messages: in round k every rank sends
        an empty message to ``rank + 2**k`` and receives one from ``rank - 2**k`` (mod
        size); after ceil(log2 size) rounds every rank has heard, indirectly, from all.
        Recorded like any message (0 bytes), under the current phase."""
        step = 1
        while step < self.size:
            self.sendrecv(_EMPTY, (self.rank + step) % self.size, _EMPTY,
                          (self.rank - step) % self.size, TAG_BARRIER)
            step *= 2

    def abort(self, message: str, errorcode: int = 1) -> None:
        """Print `message` to stderr as ``[rank R/N] message`` and end every rank of the job
        with MPI_Abort (no rank is left waiting). Does not return."""
        sys.stderr.write(f"[rank {self.rank}/{self.size}] {message}\n")
        sys.stderr.flush()
        self.mpi.Abort(errorcode)

    @contextmanager
    def fail_together(self):
        """``with comm.fail_together(): ...``: an exception inside the block prints its
        traceback with this rank's number and aborts the whole job, so the other ranks do
        not hang in a collective waiting for this one. In a world of size 1 the exception
        is simply re-raised (nobody can be left waiting)."""
        try:
            yield self
        except BaseException as exc:
            if self.size == 1 or (isinstance(exc, SystemExit) and exc.code in (0, None)):
                raise
            self.abort(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
