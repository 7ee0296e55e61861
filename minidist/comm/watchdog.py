"""The wait loop under every blocking call of the Communicator, and its watchdog.

Every blocking call (send, recv, sendrecv, barrier, ``Request.wait``, waitall: so every
collective and every strategy step) posts non-blocking requests and waits for them here,
polling ``MPI_Test`` instead of blocking inside MPI. Python thus keeps control while a rank
waits: Ctrl-C is handled (failstop.py), and a wait longer than ``MINIDIST_TIMEOUT`` seconds
(default 300; 0 disables) aborts the job, naming the collective, the phase, the step and
the ranks this rank was still waiting for.

Yielding: when more ranks run on this node than it has cores, a rank spinning on a peer
would hold the core that peer needs. ``MINIDIST_YIELD=auto`` (default) turns yielding on
then (``1``/``0`` force it): after SPIN_SECONDS of polling, each poll gives the core away
(``os.sched_yield``); otherwise one poll in POLLS_PER_YIELD does. A wait past a second
sleeps 1 ms between polls in either mode.
`Communicator.yielding` says which mode a run used. Details: docs/reliability.md.
"""
from __future__ import annotations

import os
from time import perf_counter, sleep

from mpi4py import MPI

from ..launcher import launcher_size
from .failstop import abort

DEFAULT_TIMEOUT = 300.0  # seconds; long enough for any step of this simulator
WATCHDOG_STATUS = 124  # the job's exit status when the watchdog fires (as timeout(1))
SPIN_SECONDS = 50e-6  # poll flat out this long before yielding (a neighbour's message is often this close)
POLLS_PER_YIELD = 256  # not yielding: still give the core away now and then, as MPICH's own waits do
LONG_WAIT_SECONDS = 1.0  # past this, poll once per millisecond: no transfer is that slow to progress


def timeout_from_environment() -> float:
    """``$MINIDIST_TIMEOUT`` in seconds (DEFAULT_TIMEOUT when unset; 0 disables)."""
    return check_timeout(os.environ.get("MINIDIST_TIMEOUT", DEFAULT_TIMEOUT), "MINIDIST_TIMEOUT")


def check_timeout(value, name: str = "timeout") -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a number of seconds >= 0 (0 disables the watchdog); "
                         f"got {value!r}")
    return seconds


def ranks_on_this_node() -> int:
    """How many ranks the launcher put on this node (its environment; else the job size)."""
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return launcher_size()


def yielding_from_environment() -> bool:
    """Whether waits yield the core: ``$MINIDIST_YIELD`` = auto (default: when this node
    runs more ranks than this process may use cores), 1 or 0."""
    value = os.environ.get("MINIDIST_YIELD", "auto").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value != "auto":
        raise ValueError(f"MINIDIST_YIELD must be auto, 1 or 0 (got {value!r})")
    return ranks_on_this_node() > len(os.sched_getaffinity(0))


def wait_all(comm, requests: list, statuses: list, posted: list) -> None:
    """Wait until every request completes, polling. `posted` describes each request as
    ``(direction, peer, nbytes)`` for the error messages. A message larger than its receive
    buffer raises ValueError; a wait past ``comm.timeout`` seconds aborts the job."""
    start = perf_counter()
    spin_end = start + SPIN_SECONDS
    first = _spin(comm, requests, statuses, posted, spin_end)
    if first == len(requests):
        return
    pending = list(range(first, len(requests)))
    deadline = start + comm.timeout if comm.timeout > 0 else float("inf")
    slow = start + LONG_WAIT_SECONDS
    every = 1 if comm.yielding else POLLS_PER_YIELD
    polls = 0
    while pending:
        now = perf_counter()
        if now > deadline:
            expire(comm, [posted[i] for i in pending], now - start)
        polls += 1
        if now > slow:
            sleep(1e-3)
        elif now > spin_end and polls % every == 0:
            os.sched_yield()
        pending = _still_pending(comm, requests, statuses, posted, pending)


def _spin(comm, requests, statuses, posted, until: float) -> int:
    """Test the requests in order, each until it completes, flat out until `until`; the
    index of the first one still pending (all done: their number). The tightest loop: a
    small message's wait is mostly this."""
    i, count, polls = 0, len(requests), 0
    try:
        while i < count:
            if requests[i].Test(statuses[i]):
                i += 1
            else:
                polls += 1
                if polls % 32 == 0 and perf_counter() > until:
                    break
    except MPI.Exception as exc:
        raise truncation_error(comm, exc, posted[i]) from None
    return i


def _still_pending(comm, requests, statuses, posted, pending) -> list:
    """Test each request of `pending` (indices) once; those not complete yet. Requests are
    tested one by one (cheaper than ``Testall`` with statuses, and a failure names its
    request)."""
    left = []
    for i in pending:
        try:
            if not requests[i].Test(statuses[i]):
                left.append(i)
        except MPI.Exception as exc:
            raise truncation_error(comm, exc, posted[i]) from None  # MPI's own words say nothing
    return left


def truncation_error(comm, exc, posted) -> Exception:
    """The plain-words error for a message larger than its receive buffer (the ranks
    disagree on sizes); any other MPI error is returned as it is."""
    direction, peer, nbytes = posted
    if direction != "recv" or exc.Get_error_class() != MPI.ERR_TRUNCATE:
        return exc
    return ValueError(f"rank {comm.rank}: {where(comm)}: the message from rank {peer} is larger "
                      f"than the receive buffer ({nbytes} bytes); every rank must pass an array of "
                      "the same shape and dtype to the same collective call")


def where(comm) -> str:
    """``ring_allreduce (phase 'grad-allreduce', step 3, model #1)``: what this rank is
    doing, as far as it knows."""
    details = [f"phase {comm.current_phase!r}"]
    if comm.step is not None:
        details.append(f"step {comm.step}")
    if comm.model is not None:
        details.append(f"model #{comm.model}")
    return f"{comm.operation or 'point-to-point'} ({', '.join(details)})"


def expire(comm, pending: list, waited: float) -> None:
    """The watchdog fires: name what this rank waits for (`pending`: the posted
    ``(direction, peer, nbytes)`` not complete), and abort the job."""
    waiting = sorted({peer for _, peer, _ in pending})
    parts = [f"a message from rank {p}" if d == "recv" else f"rank {p} to take our message"
             for d, p, _ in pending]
    hint = ("" if comm.model is None else " If several wrapped models step, every rank must "
            "step them in the same order (each model's messages have tags of their own).")
    abort(f"minidist watchdog: {where(comm)} waited {waited:.1f} s (MINIDIST_TIMEOUT="
          f"{comm.timeout:g}) for {' and '.join(parts)}; still waiting for rank(s) {waiting}. They (or a rank "
          "they wait for in turn) are stuck, have failed, or skipped this call (MINIDIST_DEBUG=1 compares every collective "
          f"call across ranks).{hint}", WATCHDOG_STATUS)
