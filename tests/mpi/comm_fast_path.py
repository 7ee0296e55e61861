"""Worker for tests/test_comm_fast_path.py: `allreduce`'s fast path (a call like one that
passed every check before; recursive doubling's latency body) against the full path.

    python -m mpi4py comm_fast_path.py compare   # emit each path's results and ledgers
    mpiexec -n 2 python comm_fast_path.py skip    # the last rank skips a repeated call
    mpiexec -n 2 python comm_fast_path.py die     # the last rank fails instead of calling
    mpiexec -n 2 python comm_fast_path.py finalize   # MPI.Finalize() with requests kept

"compare" runs every case three times with the fast path on (the first call checks, the
next two take the fast path) and three times with it off (`forget_known_calls` before each
call), on fresh Communicators with detailed ledgers, and emits per path the results'
digests, the ledger's per-message log (seconds left out), the scratch counters and the call
count; then the errors of bad calls made after good ones, an auto table installed after
calls were remembered, and debug mode catching a mismatch after remembered calls. "skip"
and "die" (plain mpiexec) emit nothing: the watchdog, or fail-stop, ends the job.
"finalize": calls that keep persistent requests, then the program finalizes MPI itself.
"""
import hashlib
import sys
import time

import numpy as np

from minidist.comm import Communicator, allreduce
from minidist.comm.allreduce import forget_known_calls
from minidist.comm.auto import set_auto_table
from mpi_util import emit

CASES = [(dtype, shape, op, algorithm)
         for dtype in ("float32", "float64", "int64")
         for shape in ((0,), (1,), (5,), (1024,), (3, 1000), (20000,))
         for op in (("sum", "mean", "max", "min") if dtype != "int64" else ("sum", "max", "min"))
         for algorithm in ("auto", "recursive_doubling", "ring", "rabenseifner")]


def make_input(rank, case, repeat):
    dtype, shape, op, algorithm = case
    rng = np.random.default_rng([rank, CASES.index(case), repeat])
    if dtype == "int64":
        return rng.integers(-1000, 1000, size=shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(dtype)


def run(fast: bool) -> dict:
    forget_known_calls()
    comm = Communicator(detailed=True)
    digests = []
    for case in CASES:
        dtype, shape, op, algorithm = case
        with comm.phase("|".join(map(str, case))):
            for repeat in range(3):
                if not fast:
                    forget_known_calls()
                x = make_input(comm.rank, case, repeat)
                digests.append(hashlib.sha256(allreduce(comm, x, op, algorithm).tobytes()).hexdigest())
    log = [{k: v for k, v in row.items() if k != "seconds"} for row in comm.ledger.records()]
    return {"digests": digests, "log": log, "calls": comm.calls,
            "scratch": [comm.ledger.peak_temp_bytes, comm.ledger.current_temp_bytes]}


def error_after_good_calls(comm, bad, count, debug=False) -> str:
    """The error of a call with another count on the last rank, after good ones (made with
    debug mode off, so remembered); `debug`: the odd call is made in debug mode."""
    x = np.ones(count, np.float32)
    for _ in range(3):
        allreduce(comm, x)
    comm.debug = debug
    try:
        allreduce(comm, np.ones(bad if comm.rank == comm.size - 1 else count, np.float32))
    except (ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        comm.debug = False
    return "no error"


def errors(fast: bool) -> dict:
    """Without debug mode only N = 2 is safe: both ranks of the one exchange see the odd
    message (at N = 4 a rank that raised leaves another waiting: that is fail-stop's case)."""
    forget_known_calls()
    comm = Communicator()
    found = {"debug": error_after_good_calls(comm, 12, 16, debug=True)}
    if comm.size == 2:
        found["shorter"] = error_after_good_calls(comm, 6, 8)
        if not fast:
            forget_known_calls()
        found["longer"] = error_after_good_calls(comm, 10, 8)
    again = [allreduce(comm, np.ones(8, np.float32)) for _ in range(3)]  # after the errors
    found["after_errors_ok"] = all(bool(np.all(a == comm.size)) for a in again)
    kept = comm.scratch_cache_bytes
    comm.drop_scratch_cache()  # frees the persistent requests; the next call makes new ones
    found["kept_then_dropped"] = [kept, comm.scratch_cache_bytes]
    found["after_drop_ok"] = bool(np.all(allreduce(comm, np.ones(8, np.float32)) == comm.size))
    return found


def table_change() -> dict:
    """Calls remembered under one auto table, then another one installed."""
    comm = Communicator()
    x = np.ones(256, np.float64)
    for _ in range(3):
        allreduce(comm, x)
    before = comm.ledger.totals()["messages_sent"]
    set_auto_table({2: ((0, "ring"),)})
    try:
        allreduce(comm, x)
    finally:
        set_auto_table(None)
    return {"messages_before": before, "messages_ring_call": comm.ledger.totals()["messages_sent"] - before}


def kept_kinds() -> dict:
    """More kinds of small call than the scratch cache keeps exchanges for, twice over: the
    first kinds keep theirs (no rebuilding), the others run the readable body."""
    comm = Communicator()

    def cycle():
        return [float(allreduce(comm, np.ones(count, np.float32))[0]) for count in range(1, 21) for _ in range(2)]

    first = cycle()
    kept = dict(comm._scratch._kept)
    again = cycle()
    return {"kept": len(kept), "same": all(comm._scratch._kept.get(k) is v for k, v in kept.items()),
            "ok": first == again == [float(comm.size)] * 40}


def repeated_then(comm, what):
    x = np.ones(1024, np.float32)
    for _ in range(3):
        allreduce(comm, x)
    if comm.rank == comm.size - 1:
        if what == "die":
            raise RuntimeError("injected failure instead of a repeated allreduce")
        time.sleep(20)  # skips the call: the others wait for it until their watchdog fires
        return
    allreduce(comm, x)


mode = sys.argv[1]
if mode == "compare":
    emit({"on": run(True), "off": run(False), "errors_on": errors(True), "errors_off": errors(False),
          "table": table_change(), "kinds": kept_kinds()})
elif mode in ("skip", "die"):
    repeated_then(Communicator(), mode)
elif mode == "finalize":  # persistent requests of a dropped communicator and of a live one
    for comm in (Communicator(), Communicator()):
        for count in range(1, 24):  # more kinds than the scratch cache keeps
            for _ in range(3):
                allreduce(comm, np.ones(count, np.float32))
    del comm
    keep = Communicator()
    for _ in range(3):
        allreduce(keep, np.ones(4, np.float64))
    emit({"kept": keep.scratch_cache_bytes})
    from mpi4py import MPI
    MPI.Finalize()  # the program's own: every persistent request must be freed by then
else:
    raise SystemExit(f"unknown mode {mode!r}")
