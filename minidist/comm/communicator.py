"""`Communicator`: point-to-point messages on NumPy arrays, each one recorded in a ledger.

Every byte minidist moves between ranks goes through the calls here (mpi4py's ``Isend`` /
``Irecv`` on NumPy arrays, never pickled objects), so the `Ledger` sees every message:
phase, peer, direction, bytes, and the seconds spent inside the call. The collectives
(ring.py, rooted.py, allreduce.py) are written on top of these calls alone.

Blocking calls post their requests and wait in watchdog.py's polling loop (Ctrl-C works,
``MINIDIST_TIMEOUT``, yielding); in a job of several ranks a Communicator turns fail-stop
on (failstop.py); with ``debug=True`` or ``MINIDIST_DEBUG=1`` the ranks compare each
collective call first (debug.py). Receive buffers come from a cache (scratch.py). See
docs/reliability.md. Not thread-safe: give a background thread its own communicator
(``Communicator(comm.mpi.Dup())``).
"""
from __future__ import annotations

from time import perf_counter

import numpy as np
from mpi4py import MPI

from ..launcher import env_flag
from . import failstop
from .allreduce import allreduce
from .debug import CallScope
from .ledger import DEFAULT_PHASE, RECV, SEND, Ledger
from .ring import ring_allgather
from .scratch import ScratchCache
from .tags import COMM_TAGS, TAG_BARRIER, model_tag_shift
from .watchdog import (check_timeout, timeout_from_environment, truncation_error, wait_all,
                       yielding_from_environment)

_BYTE = MPI.BYTE
_EMPTY = np.empty(0, dtype=np.uint8)


class Request:
    """A pending `Communicator.isend` / `irecv`. `wait()` blocks until it completes and
    records the message (bytes, and the seconds spent posting plus waiting) under the
    phase that was current when it was posted."""

    __slots__ = ("_comm", "_req", "_phase", "_peer", "_direction", "_nbytes", "_seconds", "done")
    # _peer, _direction, _nbytes: what was posted (`posted` gives them to the wait loop)

    def __init__(self, comm, req, phase, peer, direction, nbytes, seconds):
        self._comm, self._req, self._phase = comm, req, phase
        self._peer, self._direction, self._nbytes, self._seconds = peer, direction, nbytes, seconds
        self.done = False

    def wait(self) -> None:
        if self.done:
            return
        status = MPI.Status()
        t0 = perf_counter()
        wait_all(self._comm, [self._req], [status], [self.posted])
        self._finish(status, perf_counter() - t0)

    @property
    def posted(self) -> tuple:
        """``(direction, peer, nbytes)``: as posted; for a completed receive, the bytes
        that arrived."""
        return self._direction, self._peer, self._nbytes

    def test(self) -> bool:
        """True if the request has completed (and then records it); never blocks. The
        seconds spent testing are added to the message's."""
        if self.done:
            return True
        status = MPI.Status()
        t0 = perf_counter()
        try:
            completed = self._req.Test(status)
        except MPI.Exception as exc:
            raise truncation_error(self._comm, exc, self.posted) from None
        if completed:
            self._finish(status, perf_counter() - t0)
        else:
            self._seconds += perf_counter() - t0
        return bool(completed)

    def _finish(self, status, seconds: float) -> None:
        peer, nbytes = self._peer, self._nbytes
        if self._direction == RECV:  # the true size and sender of what arrived
            nbytes = self._nbytes = status.Get_count(_BYTE)
            peer = status.Get_source() if peer < 0 else peer
        self._comm.ledger.record(self._phase, peer, self._direction, nbytes, self._seconds + seconds)
        self.done = True


class _PhaseScope:
    """The context manager of `Communicator.phase` (a plain class: the ring enters one per step)."""

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
    """``Communicator(mpi_comm=None, detailed=False, *, debug=None, timeout=None)`` wraps
    an mpi4py communicator (``MPI.COMM_WORLD`` by default; a plain ``python script.py`` is
    a world of size 1).

    Attributes:
        rank (int), size (int): this process's rank and the number of ranks.
        ledger (Ledger): this rank's record of messages and scratch memory.
        mpi (mpi4py.MPI.Comm): the raw communicator (for the reference MPI calls).
        debug (bool): compare each collective call across ranks first ($MINIDIST_DEBUG).
        timeout (float): the watchdog's limit on one wait, s (0: none; $MINIDIST_TIMEOUT: 300).
        yielding (bool): waits give the core away (``$MINIDIST_YIELD``, watchdog.py).
        step (int | None): the training step in progress (1-based), set by wrapped models.
        model (int | None): the wrapped model stepping now; both name what a message is about.
        operation (str | None): the collective running now; calls (int): collectives so far.

    Point-to-point calls take C-contiguous NumPy arrays; `recv` and `sendrecv` return the
    number of bytes that arrived. Tags default to 0; the collectives use tags >= 30000.
    """

    timeline = None  # a timeline.Timeline records collective calls and spans when set

    def __init__(self, mpi_comm=None, detailed: bool = False, *, debug: bool | None = None,
                 timeout: float | None = None):
        self.timeout = timeout_from_environment() if timeout is None else check_timeout(timeout)
        if debug is None:
            debug = env_flag("MINIDIST_DEBUG")
        self.debug = bool(debug)
        self.yielding = yielding_from_environment()
        self.mpi = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank = self.mpi.Get_rank()
        self.size = self.mpi.Get_size()
        if MPI.COMM_WORLD.Get_size() > 1:
            failstop.install()
        self.ledger = Ledger(detailed)
        self.step = self.model = self.operation = None
        self.calls = 0
        self._phase = DEFAULT_PHASE
        self._statuses = [MPI.Status(), MPI.Status()]  # reused by the blocking calls (one thread at a time)
        self._scratch = ScratchCache()

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, phase={self._phase!r})"

    def collective(self, name: str, x=None, *, op=None, root=None, algorithm=None) -> CallScope:
        """``with comm.collective("broadcast", x, root=0): ...`` marks a collective call:
        names it for the watchdog's messages, counts it, and in debug mode first checks
        that every rank makes the same call (debug.py)."""
        return CallScope(self, name, x, op, root, algorithm)

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

    def _scoped(self, tag: int) -> int:
        """A collective's tag is shifted while a wrapped model steps (tags.model_tag_shift)."""
        return tag + model_tag_shift(self.model) if self.model is not None and tag in COMM_TAGS else tag

    # ---- blocking point-to-point (posted, then waited for in watchdog.py's loop) -----------
    def send(self, buf: np.ndarray, dest: int, tag: int = 0) -> None:
        t0 = perf_counter()
        tag = self._scoped(tag)
        request = self.mpi.Isend(buf, dest, tag)
        wait_all(self, [request], self._statuses[:1], [(SEND, dest, buf.nbytes)])
        self.ledger.record(self._phase, dest, SEND, buf.nbytes, perf_counter() - t0)

    def recv(self, buf: np.ndarray, source: int, tag: int = 0) -> int:
        """Receive into `buf` (at most ``buf.nbytes``); returns the bytes that arrived."""
        status = self._statuses[0]
        t0 = perf_counter()
        tag = self._scoped(tag)
        request = self.mpi.Irecv(buf, source, tag)
        wait_all(self, [request], [status], [(RECV, source, buf.nbytes)])
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
        statuses = self._statuses
        t0 = perf_counter()
        tag = self._scoped(tag)
        requests = [self.mpi.Irecv(recvbuf, source, tag), self.mpi.Isend(sendbuf, dest, tag)]
        wait_all(self, requests, statuses, [(RECV, source, recvbuf.nbytes), (SEND, dest, sendbuf.nbytes)])
        seconds = perf_counter() - t0
        nbytes = statuses[0].Get_count(_BYTE)
        self.ledger.record_exchange(self._phase, dest, sendbuf.nbytes,
                                    source if source >= 0 else statuses[0].Get_source(), nbytes, seconds)
        return nbytes

    # ---- non-blocking ------------------------------------------------------------------
    def isend(self, buf: np.ndarray, dest: int, tag: int = 0) -> Request:
        """Start sending `buf`; do not touch it until the request's `wait()` returns."""
        t0 = perf_counter()
        req = self.mpi.Isend(buf, dest, self._scoped(tag))
        return Request(self, req, self._phase, dest, SEND, buf.nbytes, perf_counter() - t0)

    def irecv(self, buf: np.ndarray, source: int, tag: int = 0) -> Request:
        """Start receiving into `buf`; it holds the message once `wait()` returns."""
        t0 = perf_counter()
        req = self.mpi.Irecv(buf, source, self._scoped(tag))
        return Request(self, req, self._phase, source, RECV, buf.nbytes, perf_counter() - t0)

    def waitall(self, requests) -> None:
        """Wait for every request; the seconds of the wait are shared equally among the
        requests still pending."""
        pending = [r for r in requests if not r.done]
        if not pending:
            return
        statuses = [MPI.Status() for _ in pending]
        t0 = perf_counter()
        wait_all(self, [r._req for r in pending], statuses, [r.posted for r in pending])
        share = (perf_counter() - t0) / len(pending)
        for r, status in zip(pending, statuses):
            r._finish(status, share)

    # ---- scratch: receive buffers from the cache (scratch.py says why) ----------------------
    def take_scratch(self, count: int, dtype: np.dtype) -> np.ndarray:
        """A 1-D array of `count` elements of `dtype` (an np.dtype; uninitialised) for a
        collective's receive buffer, from the communicator's `ScratchCache`, reported to
        the ledger as ``count * itemsize`` bytes of scratch until `return_scratch`."""
        self.ledger.alloc(count * dtype.itemsize)
        return self._scratch.take(count, dtype)

    def return_scratch(self, array: np.ndarray) -> None:
        """Give back an array from `take_scratch` (once); the ledger's scratch drops by its
        bytes, and its buffer waits in the cache for the next collective."""
        self.ledger.free(array.nbytes)
        self._scratch.give_back(array)

    @property
    def scratch_cache_bytes(self) -> int:
        """Bytes of receive buffers the cache holds idle between calls (not in the ledger:
        it counts scratch only while a collective uses it)."""
        return self._scratch.idle_bytes

    def drop_scratch_cache(self) -> None:
        """Free the idle cached receive buffers (the next collective allocates afresh)."""
        self._scratch.clear()

    # ---- synchronisation and failure -----------------------------------------------------
    def barrier(self) -> None:
        """Dissemination barrier from point-to-point messages: in round k every rank sends
        an empty message to ``rank + 2**k`` and receives one from ``rank - 2**k`` (mod
        size); after ceil(log2 size) rounds every rank has heard, indirectly, from all.
        Recorded like any message (0 bytes), under the current phase."""
        with self.collective("barrier"):
            distance = 1
            while distance < self.size:
                self.sendrecv(_EMPTY, (self.rank + distance) % self.size, _EMPTY,
                              (self.rank - distance) % self.size, TAG_BARRIER)
                distance *= 2

    def abort(self, message: str, errorcode: int = 1) -> None:
        """Print `message` to stderr as ``[rank R/N] message`` and end every rank of the job
        with MPI_Abort (no rank is left waiting). Does not return."""
        failstop.abort(message, errorcode)
