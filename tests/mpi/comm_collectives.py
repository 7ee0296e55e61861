"""Worker for tests/test_comm_collectives.py: every collective, every case, in ONE launch.

    python -m mpi4py comm_collectives.py all     # every collective (N = 1..5)
    python -m mpi4py comm_collectives.py ring    # ring all-reduce only (N = 7)

Each rank's input is generated from (seed, rank, count, dtype), so every rank can compute
the expected answer itself. Each case runs under its own ledger phase (the case key), so
the emitted ``ledger`` maps case -> this rank's totals, which pytest checks against
`counts.message_counts`. Emitted per rank: {"cases": [...], "ledger": {...},
"depth": {...}, "errors": {...}, "after_errors_ok": bool}.
"""
import hashlib
import sys

import numpy as np

from minidist.comm import (Communicator, allreduce, broadcast, gather_to_root, mpi_allreduce,
                           rabenseifner_allreduce, recursive_doubling_allreduce, reduce_to_root,
                           ring_allgather, ring_allreduce, ring_reduce_scatter, scatter)
from mpi_util import emit

SEED = 20240601
DTYPES = ("float32", "float64", "int64")
BIG_PRIME = 100003
ALLREDUCES = {"ring_allreduce": ring_allreduce,
              "recursive_doubling_allreduce": recursive_doubling_allreduce,
              "rabenseifner_allreduce": rabenseifner_allreduce,
              "allreduce": allreduce, "mpi_allreduce": mpi_allreduce}

comm = Communicator()
RANK, N = comm.rank, comm.size
cases = []


def make_input(rank, count, dtype, cols=None):
    rng = np.random.default_rng([SEED, rank, count, DTYPES.index(dtype)])
    shape = (count,) if cols is None else (count, cols)
    if dtype == "int64":
        return rng.integers(-1000, 1000, size=shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(dtype)


def expected_sum(count, dtype):
    return np.sum(np.stack([make_input(r, count, dtype) for r in range(N)]), axis=0)


def close(got, want, dtype):
    """Exact for integers; floats to the rounding of N additions in another order."""
    if got is None or got.shape != want.shape or got.dtype != np.dtype(dtype):
        return False
    if dtype == "int64":
        return bool(np.array_equal(got, want))
    tol = {"float32": 1e-5, "float64": 1e-12}[dtype] * N
    return bool(np.allclose(got, want, rtol=tol, atol=tol))


def digest(a):
    return None if a is None else hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def run_case(collective, dtype, count, fn, *, root=0, algorithm=None, itemsize=None, note=""):
    """Run fn() under the phase named by the case key; record what pytest checks."""
    key = f"{collective}|{algorithm}|{note}|{dtype}|n={count}|root={root}"
    with comm.phase(key):
        ok, result, inplace = fn()
    cases.append({"key": key, "collective": collective, "algorithm": algorithm, "dtype": dtype,
                  "count": count, "root": root, "ok": bool(ok), "inplace": inplace,
                  "hash": digest(result),
                  "itemsize": itemsize if itemsize is not None else np.dtype(dtype).itemsize})


def allreduce_case(name, fn, dtype, count, op, **kw):
    def body():
        x = make_input(RANK, count, dtype)
        out = fn(comm, x, op=op, **kw)
        want = expected_sum(count, dtype)
        if op == "mean":
            want = want / N
        return close(out, want.astype(dtype), dtype), out, out is x
    algorithm = kw.get("algorithm")
    run_case(name, dtype, count, body, algorithm=algorithm, note=op)


def all_cases(count, dtype, full):
    ops = ["sum", "mean"] if dtype != "int64" else ["sum"]
    names = ALLREDUCES if full else {"ring_allreduce": ring_allreduce}
    for name, fn in names.items():
        for op in ops:
            allreduce_case(name, fn, dtype, count, op)
    if not full:
        return
    for algorithm in ("ring", "recursive_doubling", "rabenseifner"):
        allreduce_case("allreduce", allreduce, dtype, count, "sum", algorithm=algorithm)
    rooted_cases(count, dtype)


def rooted_cases(count, dtype):
    mine, want = make_input(RANK, count, dtype), expected_sum(count, dtype)

    def reduce_scatter():
        before = mine.copy()
        out = ring_reduce_scatter(comm, mine)
        same = np.array_equal(mine, before)  # x must be left unchanged
        return same and close(out, np.array_split(want, N)[RANK], dtype), out, out is mine
    run_case("ring_reduce_scatter", dtype, count, reduce_scatter)

    full = make_input(0, count, dtype)
    for note in ("count", "out"):
        def gather_all(note=note):
            chunk = np.array_split(full, N)[RANK].copy()
            out = np.empty_like(full) if note == "out" else None
            got = ring_allgather(comm, chunk, out=out, count=count if note == "count" else None)
            return np.array_equal(got, full), got, (got is out) if note == "out" else None
        run_case("ring_allgather", dtype, count, gather_all, note=note)

    for root in sorted({0, N - 1, N // 2}):
        def gather(root=root):
            out = gather_to_root(comm, mine, root=root)
            if RANK != root:
                return out is None, None, None
            stack = np.stack([make_input(r, count, dtype) for r in range(N)])
            return np.array_equal(out, stack), out, None
        run_case("gather_to_root", dtype, count, gather, root=root)
        for algorithm in ("linear", "binomial"):
            def reduce(root=root, algorithm=algorithm):
                before = mine.copy()
                out = reduce_to_root(comm, mine, root=root, algorithm=algorithm)
                unchanged = np.array_equal(mine, before)
                if RANK != root:
                    return unchanged and out is None, None, None
                return unchanged and close(out, want, dtype), out, out is mine
            run_case("reduce_to_root", dtype, count, reduce, root=root, algorithm=algorithm)

            def bcast(root=root, algorithm=algorithm):
                x = make_input(RANK, count, dtype)
                out = broadcast(comm, x, root=root, algorithm=algorithm)
                return np.array_equal(out, make_input(root, count, dtype)), out, out is x
            run_case("broadcast", dtype, count, bcast, root=root, algorithm=algorithm)

        def scatter_rows(root=root):  # 2-D rows: itemsize of the count formula = one row
            source = make_input(root, count, dtype, cols=3)
            out = scatter(comm, source if RANK == root else None, root=root)
            return np.array_equal(out, np.array_split(source, N)[RANK]), out, None
        run_case("scatter", dtype, count, scatter_rows, root=root, itemsize=3 * np.dtype(dtype).itemsize)


def binomial_depth_logs():
    """Per root, the ordered (direction, peer) of each message of one binomial and one
    linear broadcast: pytest replays them to measure the depth of the tree."""
    logs = {}
    comm.ledger.detailed = True
    for root in range(N):
        for algorithm in ("binomial", "linear"):
            phase = f"depth|{algorithm}|{root}"
            with comm.phase(phase):
                broadcast(comm, np.zeros(4), root=root, algorithm=algorithm)
            logs[phase] = [(r["direction"], r["peer"]) for r in comm.ledger.records()
                           if r["phase"] == phase]
    comm.ledger.detailed = False
    return logs


def error_cases():
    """Bad arguments that every rank passes alike must raise on every rank, and leave the
    communicator in step (checked by the all-reduce that follows)."""
    x = np.arange(6, dtype=np.float64)
    readonly = x.copy()
    readonly.setflags(write=False)
    bad = {
        "readonly": lambda: ring_allreduce(comm, readonly),
        "noncontiguous": lambda: ring_allreduce(comm, np.arange(12.0)[::2]),
        "dtype_int32": lambda: ring_allreduce(comm, np.arange(6, dtype=np.int32)),
        "dtype_complex": lambda: recursive_doubling_allreduce(comm, np.zeros(3, np.complex128)),
        "not_array": lambda: reduce_to_root(comm, [1.0, 2.0]),
        "mean_int64": lambda: ring_allreduce(comm, np.arange(6), op="mean"),
        "bad_op": lambda: rabenseifner_allreduce(comm, x.copy(), op="prod"),
        "bcast_root_size": lambda: broadcast(comm, x.copy(), root=N),
        "bcast_root_negative": lambda: broadcast(comm, x.copy(), root=-1, algorithm="binomial"),
        "reduce_root": lambda: reduce_to_root(comm, x, root=N + 3),
        "gather_root": lambda: gather_to_root(comm, x, root=N),
        "scatter_root": lambda: scatter(comm, x, root=N),
        "scatter_root_passes_none": lambda: scatter(comm, None, root=0),
        "scatter_0d": lambda: scatter(comm, np.ones(()), root=N - 1),
        "bcast_algorithm": lambda: broadcast(comm, x.copy(), algorithm="tree"),
        "allreduce_algorithm": lambda: allreduce(comm, x.copy(), algorithm="butterfly"),
        "allgather_chunk_size": lambda: ring_allgather(comm, np.zeros(3), count=11 * N + 1),
        "mpi_readonly": lambda: mpi_allreduce(comm, readonly),
    }
    found = {}
    for name, call in bad.items():
        try:
            call()
            found[name] = None
        except Exception as exc:  # noqa: BLE001 - the test looks at the type and message
            found[name] = [type(exc).__name__, str(exc)]
    y = make_input(RANK, 10, "int64")
    ok = np.array_equal(ring_allreduce(comm, y), expected_sum(10, "int64"))
    return found, bool(ok)


def main(mode):
    counts = sorted({0, 1, max(N - 1, 0), N, N + 1, 2 * N, BIG_PRIME})
    with comm.fail_together():
        for dtype in DTYPES:
            for count in counts:
                all_cases(count, dtype, full=(mode == "all"))
        result = {"cases": cases, "ledger": comm.ledger.by_phase(),
                  "peak_temp_bytes": comm.ledger.peak_temp_bytes,
                  "current_temp_bytes": comm.ledger.current_temp_bytes}
        if mode == "all":
            result["depth"] = binomial_depth_logs()
            result["errors"], result["after_errors_ok"] = error_cases()
    emit(result)


main(sys.argv[1] if len(sys.argv) > 1 else "all")
