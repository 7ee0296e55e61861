"""Debug mode: before each collective, every rank checks that all ranks make the same call.

A collective called inconsistently (another count, dtype, op, root or algorithm on one
rank, or a call skipped) hangs or returns garbage. With ``Communicator(debug=True)`` or
``MINIDIST_DEBUG=1``, each collective first sends every other rank a fixed record of nine
int64 (call number, collective, count, dtype, op, root, algorithm, model, step; -1 where
unknown, e.g. a scatter's count off the root) and receives theirs; if a field differs,
every rank raises the same RuntimeError listing each rank's call, before any data moves.
A rank that never arrives (a skipped last call) is caught by the watchdog. The records are
raw messages, outside the ledger. Without debug mode only the checks that need no message
run (a message of the wrong size is named as such). Details: docs/reliability.md.
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .tags import TAG_DEBUG
from .watchdog import wait_all

FIELDS = ("call", "collective", "count", "dtype", "op", "root", "algorithm", "model", "step")
UNKNOWN = -1
COLLECTIVES = ("step", "barrier", "allreduce", "ring_reduce_scatter", "ring_allgather", "gather_to_root",
               "reduce_to_root", "broadcast", "scatter", "RingAllreduce")
# the all-reduces are one collective; the algorithm is a field of its own
_ALLREDUCES = {"ring_allreduce": "ring", "recursive_doubling_allreduce": "recursive_doubling",
               "rabenseifner_allreduce": "rabenseifner", "mpi_allreduce": "mpi"}
HINTS = {"model": "Wrapped models are stepped in a different order on different ranks. ",
         "step": "A rank skipped or repeated a step. ",
         "collective": "A rank skipped a call, or made another one. "}
_OPS = ("sum", "mean", "max", "min")
_ALGORITHMS = ("ring", "recursive_doubling", "rabenseifner", "mpi", "linear", "binomial")


def _word(text: str) -> int:
    """Up to 8 ASCII characters as one int64 (a dtype travels as its ``.str``)."""
    return int(np.frombuffer(text.encode()[:8].ljust(8, b"\0"), np.int64)[0])


def _text(word: int) -> str:
    return np.array([word], np.int64).tobytes().rstrip(b"\0").decode(errors="replace")


def fingerprint(comm, name: str, x, op, root, algorithm) -> np.ndarray:
    """This rank's record (FIELDS) of the call it is about to make."""
    if name in _ALLREDUCES:
        name, algorithm = "allreduce", _ALLREDUCES[name]
    known = isinstance(x, np.ndarray)
    return np.array([comm.calls, COLLECTIVES.index(name),
                     x.size if known else UNKNOWN, _word(x.dtype.str) if known else UNKNOWN,
                     UNKNOWN if op is None else _OPS.index(op),
                     UNKNOWN if root is None else root,
                     UNKNOWN if algorithm is None else _ALGORITHMS.index(algorithm),
                     UNKNOWN if comm.model is None else comm.model,
                     UNKNOWN if comm.step is None else comm.step], dtype=np.int64)


def describe(record) -> str:
    """``#3 allreduce(count=10, dtype=float64, op=sum, algorithm=ring, model=1, step=2)``."""
    call, collective, count, dtype, op, root, algorithm, model, step = (int(v) for v in record)
    shown = {"count": count, "dtype": np.dtype(_text(dtype)).name if dtype != UNKNOWN else UNKNOWN,
             "op": _OPS[op] if op != UNKNOWN else op, "root": root,
             "algorithm": _ALGORITHMS[algorithm] if algorithm != UNKNOWN else algorithm,
             "model": model, "step": step}
    args = ", ".join(f"{k}={v}" for k, v in shown.items() if v != UNKNOWN)
    return f"#{call} {COLLECTIVES[collective]}({args})"


def differing_fields(records: np.ndarray) -> list[str]:
    """The FIELDS on which the ranks' records disagree (UNKNOWN matches anything)."""
    out = []
    for i, field in enumerate(FIELDS):
        known = records[:, i][records[:, i] != UNKNOWN]
        if known.size and (known != known[0]).any():
            out.append(field)
    return out


def exchange_records(comm, mine: np.ndarray) -> np.ndarray:
    """Every rank's record, in rank order: each rank sends its record to every other one
    (raw messages, tag TAG_DEBUG, outside the ledger; waited for under the watchdog)."""
    records = np.empty((comm.size, mine.size), np.int64)
    records[comm.rank] = mine
    others = [r for r in range(comm.size) if r != comm.rank]
    requests = [comm.mpi.Irecv(records[r], r, TAG_DEBUG) for r in others]
    requests += [comm.mpi.Isend(mine, r, TAG_DEBUG) for r in others]
    posted = [("recv", r, mine.nbytes) for r in others] + [("send", r, mine.nbytes) for r in others]
    wait_all(comm, requests, [MPI.Status() for _ in requests], posted)
    return records


def check_same_call(comm, name: str, x, op, root, algorithm) -> None:
    """Raise the same RuntimeError on every rank unless all ranks make this very call."""
    records = exchange_records(comm, fingerprint(comm, name, x, op, root, algorithm))
    fields = differing_fields(records)
    if fields:
        calls = "\n".join(f"  rank {r}: {describe(rec)}" for r, rec in enumerate(records))
        odd = [r for r in range(1, comm.size) if differing_fields(records[[0, r]])]
        hint = HINTS.get(fields[0], "")
        raise RuntimeError(f"minidist debug: the ranks disagree on collective call #{comm.calls} "
                           f"(different {', '.join(fields)}; ranks differing from rank 0: {odd}):\n"
                           f"{calls}\n{hint}Every rank must make the same collective calls, in the "
                           "same order, with the same count, dtype, op, root and algorithm.")


class CallScope:
    """The context manager of `Communicator.collective`: names the call for the watchdog,
    counts it, and in debug mode checks it first (outermost calls only)."""

    __slots__ = ("_comm", "_name", "_args", "_previous")

    def __init__(self, comm, name: str, x, op, root, algorithm):
        self._comm, self._name, self._args = comm, name, (x, op, root, algorithm)

    def __enter__(self):
        comm = self._comm
        self._previous = comm.operation
        if self._previous is None:
            comm.calls += 1
            if comm.debug and comm.size > 1:
                comm.operation = f"the debug check before {self._name}"
                try:
                    check_same_call(comm, self._name, *self._args)
                finally:
                    comm.operation = None
            comm.operation = self._name
        return comm

    def __exit__(self, *exc_info) -> bool:
        self._comm.operation = self._previous
        return False
