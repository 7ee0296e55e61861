"""Run under mpiexec by the ring grader: every learner ``ring_allreduce`` it is given, on
every case, with a communicator proxy that counts the bytes each rank sends.

    mpiexec -n N python -m minidist.exercises.ring_worker DIR/ring.py [OTHER/ring.py ...]

The learner gets `CountingComm` around a fresh duplicate of COMM_WORLD per case (so a
wrong solution's stray messages cannot reach the next case); point-to-point calls pass
through and sends are counted, anything else (Allreduce, Reduce, Allgather, Bcast, Dup...)
raises and is reported as "not allowed: comm.X". The reference runs on the library's own
`Communicator` and `ring_allreduce`. Rank 0 prints one JSON line per case event (MARK).
"""
from __future__ import annotations

import json
import os
import pickle
import sys

import numpy as np

from ..comm import Communicator, ring_allreduce
from .grading import NotImplementedYet, Problem, call, compare, load_solution
from .ring_grader import ERRORS_ENV, MARK

DTYPES = ("float64", "float32", "int64")
TOLERANCE = {"float64": (1e-12, 1e-12), "float32": (1e-5, 1e-5), "int64": (0, 0)}
BUFFER_SENDS = frozenset({"Send", "Ssend", "Bsend", "Rsend", "Isend", "Issend", "Ibsend", "Irsend",
                          "Sendrecv", "Sendrecv_replace"})
OBJECT_SENDS = frozenset({"send", "ssend", "bsend", "isend", "issend", "ibsend", "sendrecv"})
SEND_KEYWORDS = {"Sendrecv": "sendbuf", "sendrecv": "sendobj"}  # what is sent, passed by keyword
ALLOWED = frozenset({"Recv", "Irecv", "recv", "irecv", "Get_rank", "Get_size", "rank", "size",
                     "Probe", "Iprobe", "probe", "iprobe", "Barrier", "barrier"})


class NotAllowed(Exception):
    """A collective (or any call that is not point-to-point) on the graded communicator."""


def buffer_bytes(spec) -> int:
    """Bytes an mpi4py buffer argument sends: an array, ``[array, type]``,
    ``[array, count, type]`` or ``[array, (count, displ), type]``."""
    if isinstance(spec, (list, tuple)):
        array = np.asarray(spec[0])
        count = spec[1] if len(spec) >= 3 else None
        if isinstance(count, (list, tuple)):
            count = count[0]
        if count is None or not isinstance(count, (int, np.integer)):
            return array.nbytes
        size = spec[-1].Get_size() if hasattr(spec[-1], "Get_size") else array.itemsize
        return int(count) * size
    if isinstance(spec, (bytes, bytearray)):
        return len(spec)
    return int(np.asarray(spec).nbytes) if spec is not None else 0


def object_bytes(obj) -> int:
    """Bytes of a pickled send: the array's data for an array, else the pickle's length."""
    return obj.nbytes if isinstance(obj, np.ndarray) else len(pickle.dumps(obj))


class CountingComm:
    """An mpi4py communicator that counts what this rank sends and refuses collectives."""

    def __init__(self, comm):
        self._comm, self.bytes_sent, self.messages_sent, self.refused = comm, 0, 0, []

    def __getattr__(self, name):
        if name in BUFFER_SENDS or name in OBJECT_SENDS:
            method = getattr(self._comm, name)
            measure = buffer_bytes if name in BUFFER_SENDS else object_bytes
            keyword = SEND_KEYWORDS.get(name, "buf" if name in BUFFER_SENDS else "obj")

            def counted(*args, **kwargs):
                self.bytes_sent += measure(args[0] if args else kwargs.get(keyword))
                self.messages_sent += 1
                return method(*args, **kwargs)
            return counted
        if name in ALLOWED:
            return getattr(self._comm, name)
        self.refused.append(name)
        raise NotAllowed(f"not allowed: comm.{name} (a ring uses point-to-point calls only: "
                         "Send/Recv/Sendrecv/Isend/Irecv)")


def make_input(count: int, dtype: str, rank: int, seed: int = 0) -> np.ndarray:
    """Rank `rank`'s array: any rank can rebuild every rank's input, for NumPy's sum."""
    rng = np.random.default_rng([seed, count, DTYPES.index(dtype), rank])
    if dtype == "int64":
        return rng.integers(-10**6, 10**6, count)
    return rng.standard_normal(count).astype(dtype)


def cases(size: int):
    """(count, dtype) of every case at `size` ranks: counts not divisible by N (for N > 1),
    the first one smaller than N (some chunks are empty), the last one 8 MB: far past
    MPI's eager limit, so a ring whose ranks all Send before they Recv deadlocks (a hang)
    instead of passing on small messages that MPI buffers."""
    small = [(count, dtype) for count in (11, 1001) for dtype in DTYPES]
    return [(max(size - 1, 1), "float64")] + small + [(1_000_003, "float64")]


def run_learner(module, mpi_comm, x: np.ndarray) -> dict:
    """The learner's ring_allreduce on a copy of `x` through a CountingComm."""
    proxy, mine = CountingComm(mpi_comm), x.copy()
    record = {"problem": None, "not_implemented": None, "returned": None}
    try:
        returned = call(module, "ring_allreduce", proxy, mine)
        if isinstance(returned, np.ndarray) and not np.shares_memory(returned, mine):
            record["returned"] = returned
    except NotImplementedYet as e:
        record.update(problem=str(e), not_implemented=e.function)
    except Problem as e:
        record["problem"] = str(e)
    if proxy.refused:
        record["problem"] = f"not allowed: comm.{proxy.refused[0]} (point-to-point calls only)"
    record.update(x=mine, bytes=proxy.bytes_sent, messages=proxy.messages_sent)
    return record


def _reference_bytes(world, x: np.ndarray) -> int:
    """Bytes this rank sends in minidist's own ring_allreduce of `x`."""
    world.ledger.reset()
    ring_allreduce(world, x.copy())
    return world.ledger.totals()["bytes_sent"]


def _in_place_hint(x_in, returned):
    def hint(got):
        if np.array_equal(got, x_in):
            return ("x was not changed: write the sum into x in place (x[...] = ...)"
                    + (", not into a new array" if returned is not None else ""))
        return None
    return hint


def judge(records: list, count: int, dtype: str) -> str | None:
    """Rank 0: the first problem of one case (None: it passes)."""
    size = len(records)
    problems = [(r, rec["problem"]) for r, rec in enumerate(records) if rec["problem"]]
    if problems:
        r, text = problems[0]
        return text if len({p for _, p in problems}) == 1 and len(problems) == size else f"rank {r}: {text}"
    inputs = [make_input(count, dtype, r) for r in range(size)]
    expected = np.sum(inputs, axis=0, dtype=np.int64 if dtype == "int64" else np.float64)
    rtol, atol = TOLERANCE[dtype]
    for r, rec in enumerate(records):
        compare(f"x on rank {r}", expected, rec["x"], rtol=rtol, atol=atol,
                hint=_in_place_hint(inputs[r], rec["returned"]))
    too_many = _judge_bytes(records, count, np.dtype(dtype).itemsize)
    if too_many:
        return too_many
    for r, rec in enumerate(records[1:], start=1):
        if not np.array_equal(rec["x"], records[0]["x"]):
            i = int(np.flatnonzero(rec["x"] != records[0]["x"])[0])
            return (f"x differs between ranks: rank 0 has {records[0]['x'][i].item()!r} at [{i}], rank "
                    f"{r} has {rec['x'][i].item()!r} (every rank must end with the same bytes)")
    return None


def _judge_bytes(records, count, itemsize) -> str | None:
    size, nbytes = len(records), count * itemsize
    ideal, slack = 2 * (size - 1) * nbytes / size, 2 * (size - 1) * itemsize
    for r, rec in enumerate(records):
        sent = rec["bytes"]
        if abs(sent - ideal) > slack:
            word = "too many" if sent > ideal else "too few"
            return (f"bytes sent: {word}: rank {r} sent {sent} bytes in {rec['messages']} messages; a ring "
                    f"all-reduce of {nbytes} bytes over {size} ranks sends 2(N-1)/N of them = {ideal:g} "
                    f"(+- one element per step: {ideal - slack:g}..{ideal + slack:g}; minidist's "
                    f"ring_allreduce sends {rec['reference_bytes']})")
    return None


def emit(event: dict) -> None:
    """Rank 0's event line (the other ranks never print: their lines could interleave)."""
    print(MARK + json.dumps(event), flush=True)


def note_error(rank: int, index: int, case: str, problem: str) -> None:
    """Append a rank's learner error to its file in $ERRORS_ENV, for the hang report."""
    folder = os.environ.get(ERRORS_ENV)
    if folder:
        with open(os.path.join(folder, f"rank{rank}.jsonl"), "a") as f:
            f.write(json.dumps({"solution": index, "case": case, "error": problem}) + "\n")


def grade_solution(world, index: int, path: str) -> None:
    """Every case of one solution; rank 0 emits the events."""
    try:
        module, failure = load_solution(path, f"_minidist_ring_{index}"), None
    except Problem as e:
        module, failure = None, str(e)
    for count, dtype in cases(world.size):
        case = f"N={world.size} count {count} {dtype}"
        if world.rank == 0:
            emit({"solution": index, "case": case, "start": True})
        x = make_input(count, dtype, world.rank)
        reference_bytes = _reference_bytes(world, x)
        if failure is None:
            record = run_learner(module, world.mpi.Dup(), x)
            if record["problem"] and world.size > 1:  # said now, in case the others now hang
                note_error(world.rank, index, case, record["problem"])
        else:
            record = {"problem": failure, "not_implemented": None}
        record["reference_bytes"] = reference_bytes
        records = world.mpi.gather(record, root=0)
        if world.rank == 0:
            try:
                problem = judge(records, count, dtype)
            except Problem as e:
                problem = str(e)
            emit({"solution": index, "case": case, "problem": problem,
                  "not_implemented": records[0]["not_implemented"]})


def main(argv=None) -> int:
    world = Communicator()
    for index, path in enumerate(sys.argv[1:] if argv is None else argv):
        grade_solution(world, index, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
