"""A clock common to all ranks: each rank's offset from rank 0, measured by ping-pong.

Rank 0 sends to rank r at its local time t0; r answers with its own clock reading tr;
rank 0 reads t1 when the answer lands. If the two legs took equally long, r's clock
runs ``tr - (t0 + t1) / 2`` ahead of rank 0's, and whatever the legs took, the error is
at most half the round trip, ``(t1 - t0) / 2``. Of several rounds the one with the
shortest round trip is kept (the tightest bound). This is bookkeeping: raw MPI calls on
the caller's communicator, outside every ledger and phase. Details: docs/timing.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

import numpy as np

from .tags import TAG_CLOCK  # bookkeeping, never counted in a ledger

DEFAULT_ROUNDS = 20


@dataclass(frozen=True)
class ClockSync:
    """This rank's view of the common clock.

    Attributes:
        offset: seconds this rank's local clock runs ahead of rank 0's.
        bound: the largest error of `offset` (half the kept round trip; 0 on rank 0).
        offsets, bounds: every rank's, in rank order (the same on every rank).
        rounds: ping-pong rounds per rank.
    """

    offset: float
    bound: float
    offsets: tuple
    bounds: tuple
    rounds: int
    local_clock: object = perf_counter

    def now(self) -> float:
        """Seconds on the common clock (rank 0's local clock)."""
        return self.local_clock() - self.offset

    def to_common(self, local_seconds: float) -> float:
        return local_seconds - self.offset

    def header(self) -> dict:
        """What a run's header states about the clock."""
        return {"method": f"ping-pong against rank 0, shortest of {self.rounds} round trips",
                "offsets_seconds": list(self.offsets), "bounds_seconds": list(self.bounds),
                "bound_seconds": max(self.bounds)}


def _ping(mpi_comm, peer: int, rounds: int, clock) -> tuple[float, float]:
    """Rank 0's side against `peer`: (offset, bound) of the shortest round trip."""
    answer = np.empty(1)
    best = (0.0, float("inf"))
    for _ in range(rounds):
        t0 = clock()
        mpi_comm.Send(np.array([t0]), peer, TAG_CLOCK)
        mpi_comm.Recv(answer, peer, TAG_CLOCK)
        t1 = clock()
        half = (t1 - t0) / 2
        if half < best[1]:
            best = (float(answer[0]) - (t0 + t1) / 2, half)
    return best


def _pong(mpi_comm, rounds: int, clock) -> None:
    ask = np.empty(1)
    for _ in range(rounds):
        mpi_comm.Recv(ask, 0, TAG_CLOCK)
        mpi_comm.Send(np.array([clock()]), 0, TAG_CLOCK)


def synchronize_clocks(mpi_comm, rounds: int = DEFAULT_ROUNDS, clock=perf_counter) -> ClockSync:
    """Measure every rank's clock offset against rank 0 (collective; every rank calls it).

    `mpi_comm` is an mpi4py communicator (``comm.mpi``); `clock` the local clock (a test
    may skew it). Returns the same offsets and bounds on every rank."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1 (got {rounds}); each round is one ping-pong")
    rank, size = mpi_comm.Get_rank(), mpi_comm.Get_size()
    table = np.zeros((2, size))  # offsets, bounds
    for peer in range(1, size):  # one peer at a time: rank 0 answers nobody else meanwhile
        if rank == 0:
            table[:, peer] = _ping(mpi_comm, peer, rounds, clock)
        elif rank == peer:
            _pong(mpi_comm, rounds, clock)
    mpi_comm.Bcast(table, root=0)
    offsets, bounds = tuple(float(v) for v in table[0]), tuple(float(v) for v in table[1])
    return ClockSync(offsets[rank], bounds[rank], offsets, bounds, rounds, clock)


def single_rank_clock(clock=perf_counter) -> ClockSync:
    """The trivial common clock of a one-rank run (or of a strategy without a communicator)."""
    return ClockSync(0.0, 0.0, (0.0,), (0.0,), 0, clock)
