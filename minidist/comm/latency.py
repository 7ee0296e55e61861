"""The latency path of `allreduce`: recursive doubling on a power-of-two number of ranks
for a small message, each exchange written out (``Irecv`` + ``Isend`` on the raw
communicator, the watchdog's wait loop, one ledger entry) instead of going through
`Communicator.sendrecv`, and the receive buffer the one the scratch cache keeps for this
(count, dtype) (`ScratchCache.kept`) instead of a take and a give-back.

The same messages, ledger entries (scratch bytes included), errors and bits as
`allreduce._recursive_doubling`, the readable version (tests run both). `allreduce`
takes it only past its gate (`allreduce._checked_before`). Why it exists, measured:
docs/performance.md, "Small all-reduces".
"""
from __future__ import annotations

from time import perf_counter

import numpy as np
from mpi4py import MPI

from .checks import mismatch_error
from .ledger import RECV, SEND
from .tags import TAG_ALLREDUCE
from .watchdog import wait_all

_BYTE = MPI.BYTE


def latency_allreduce(comm, x: np.ndarray, op: str, ufunc) -> np.ndarray:
    """Recursive doubling of `x` in place, on arguments already checked, when
    `allreduce.takes_latency_path` says so."""
    mpi, ledger, phase, rank, size = comm.mpi, comm.ledger, comm.current_phase, comm.rank, comm.size
    flat = x if x.ndim == 1 else x.reshape(-1)
    nbytes, statuses, tag = flat.nbytes, comm._statuses, comm._scoped(TAG_ALLREDUCE)
    incoming = comm._scratch.kept(flat.size, flat.dtype)
    ledger.held_briefly(nbytes)
    mask = 1
    while mask < size:
        partner = rank ^ mask
        t0 = perf_counter()
        requests = [mpi.Irecv(incoming, partner, tag), mpi.Isend(flat, partner, tag)]
        wait_all(comm, requests, statuses, [(RECV, partner, nbytes), (SEND, partner, nbytes)])
        got = statuses[0].Get_count(_BYTE)
        ledger.record_exchange(phase, partner, nbytes, partner, got, perf_counter() - t0)
        if got != nbytes:
            raise mismatch_error("recursive_doubling_allreduce", rank, partner, got, nbytes)
        ufunc(flat, incoming, out=flat)
        mask <<= 1
    if op == "mean":
        np.divide(flat, size, out=flat)
    return x
