"""Worker for tests/test_comm_collectives.py: every collective, every case, in ONE launch.

    python -m mpi4py comm_collectives.py all     # every collective (N = 1..5)
    python -m mpi4py comm_collectives.py ring    # ring all-reduce only (N = 7)

Each rank's input is generated from (seed, rank, count, dtype), so every rank can compute
the expected answer itself. Each case runs under its own ledger phase (the case key), so
the emitted ``ledger`` maps case -> this rank's totals, which pytest checks against
`counts.message_counts`. Emitted per rank: {"cases": [...], "ledger": {...},
"depth": {...}, "errors": {...}, "after_errors_ok": bool, "nonblocking": {...}}.

"nonblocking" (mode "all"): `RingAllreduce` against the blocking `ring_allreduce` on the
same inputs (float16 included), driven in three ways; several rings in flight at once on
different tags, with a blocking ring in between; and its argument errors. "cache" (mode
"all"): the communicator's cached receive buffers (reuse, growth, page faults).
"""
import hashlib
import os
import resource
import sys

import numpy as np

from minidist.comm import (Communicator, RingAllreduce, allreduce, broadcast, gather_to_root,
                           mpi_allreduce, rabenseifner_allreduce, recursive_doubling_allreduce,
                           reduce_to_root, ring_allgather, ring_allreduce, ring_reduce_scatter,
                           scatter)
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
    rng = np.random.default_rng([SEED, rank, count, (*DTYPES, "float16").index(dtype)])
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
    comm.ledger.reset_peak()
    with comm.phase(key):
        ok, result, inplace = fn()
    cases.append({"key": key, "collective": collective, "algorithm": algorithm, "dtype": dtype,
                  "count": count, "root": root, "ok": bool(ok), "inplace": inplace,
                  "hash": digest(result), "scratch": comm.ledger.peak_temp_bytes,
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


# ---- the non-blocking ring ------------------------------------------------------------------
NB_DTYPES = ("float16", "float32", "float64", "int64")
DRIVES = ("poll", "wait", "steps")


def drive(op, how):
    """Run a started RingAllreduce to the end: polling advance(), wait(), or advance_to(k)
    one step at a time."""
    if how == "poll":
        while not op.advance():
            os.sched_yield()  # let an oversubscribed neighbour run (N > cores)
    elif how == "wait":
        op.wait()
    else:
        for k in range(1, op.total_steps + 1):
            op.advance_to(k)
    return op.done


def half_bound(count, op):
    """Elementwise bound of a float16 ring sum's error: N-1 additions, each rounded to half
    of float16's epsilon (2**-11) of a partial no larger than sum_i |x_i|; the mean adds
    one more rounding."""
    total = np.sum(np.abs(np.stack([make_input(r, count, "float16").astype(np.float64)
                                    for r in range(N)])), axis=0)
    bound = max(N - 1, 0) * 2.0**-11 * total
    return bound / N + 2.0**-11 * total / N if op == "mean" else bound


def nonblocking_case(dtype, count, op, how):
    """One input through the blocking ring (phase nbref|...) and through RingAllreduce
    (phase nb|...): the bytes must match; the result must match NumPy."""
    key = f"{dtype}|{op}|n={count}|{how}"
    mine = make_input(RANK, count, dtype)
    ref, x = mine.copy(), mine.copy()
    with comm.phase("nbref|" + key):
        ring_allreduce(comm, ref, op=op)
    with comm.phase("nb|" + key):
        ring_op = RingAllreduce(comm, x, op=op, tag=7)
    done_at_start = ring_op.done
    finished = drive(ring_op.start(), how)
    stack = np.stack([make_input(r, count, dtype).astype(np.float64) for r in range(N)])
    want = stack.max(axis=0) if op == "max" else stack.sum(axis=0) / (N if op == "mean" else 1)
    if dtype == "float16":
        ok = bool(np.all(np.abs(x.astype(np.float64) - want) <= half_bound(count, op)))
    else:
        ok = close(x, want.astype(dtype), dtype)
    return {"key": key, "dtype": dtype, "count": count, "op": op, "how": how, "ok": ok,
            "same_bytes": x.tobytes() == ref.tobytes(), "hash": digest(x),
            "itemsize": np.dtype(dtype).itemsize, "done": bool(finished),
            "done_at_start": bool(done_at_start), "steps": ring_op.step,
            "total_steps": ring_op.total_steps}


def concurrent_rings(order):
    """Four rings in flight at once on tags 101..104 (different dtypes, sizes and ops) and a
    blocking ring in between. ``order="poll"``: advance(block=False) round robin, starting
    at a different ring on each rank; ``"reverse"``: wait() newest first, the same order on
    every rank."""
    specs = [("float32", BIG_PRIME, "sum"), ("float16", 2 * N + 1, "mean"), ("int64", N - 1, "max"),
             ("float64", 1000, "mean")]
    inputs = [make_input(RANK, c, d) for d, c, _ in specs]
    comm.drop_scratch_cache()  # from here on the cache holds only what these rings use
    refs = [ring_allreduce(comm, a.copy(), op=op) for a, (_, _, op) in zip(inputs, specs)]
    arrays = [a.copy() for a in inputs]
    ops = []
    for k, (array, (dtype, count, op)) in enumerate(zip(arrays, specs)):
        with comm.phase(f"nbc|{order}|{k}"):
            ops.append(RingAllreduce(comm, array, op=op, tag=101 + k).start())
    held = comm.ledger.current_temp_bytes
    cache_while = comm.scratch_cache_bytes  # idle buffers only: the four rings hold theirs
    between = make_input(RANK, 17, "float64")  # a blocking ring while the others are in flight
    ring_allreduce(comm, between)
    between_ok = close(between, expected_sum(17, "float64"), "float64")
    if order == "poll":
        turn = RANK % len(ops)
        while not all(op.done for op in ops):
            ops[turn].advance()
            turn = (turn + 1) % len(ops)
            os.sched_yield()
    else:
        for op in reversed(ops):
            op.wait()
    cache_after = comm.scratch_cache_bytes
    again = [RingAllreduce(comm, a.copy(), op=op, tag=101 + k).start()  # the same four again
             for k, (a, (_, _, op)) in enumerate(zip(inputs, specs))]
    for op in again:
        op.wait()
    return {"specs": [[d, c, o, np.dtype(d).itemsize] for d, c, o in specs],
            "same_bytes": [a.tobytes() == r.tobytes() for a, r in zip(arrays, refs)],
            "hashes": [digest(a) for a in arrays], "held": held, "between_ok": between_ok,
            "after": comm.ledger.current_temp_bytes, "cache_while": cache_while,
            "cache_after": cache_after, "cache_again": comm.scratch_cache_bytes}


def nonblocking_errors():
    """Bad calls raise on every rank; a duplicate tag in flight raises (N > 1)."""
    readonly = np.zeros(4)
    readonly.setflags(write=False)
    found = {}

    def attempt(name, call):
        try:
            call()
            found[name] = None
        except Exception as exc:  # noqa: BLE001 - pytest looks at the type and message
            found[name] = [type(exc).__name__, str(exc)]

    attempt("dtype_int32", lambda: RingAllreduce(comm, np.zeros(4, np.int32)))
    attempt("mean_int64", lambda: RingAllreduce(comm, np.zeros(4, np.int64), op="mean"))
    attempt("readonly", lambda: RingAllreduce(comm, readonly))
    attempt("bad_tag", lambda: RingAllreduce(comm, np.zeros(4), tag=-1))
    attempt("advance_unstarted", lambda: RingAllreduce(comm, np.zeros(4)).advance())
    attempt("float16_elsewhere", lambda: recursive_doubling_allreduce(comm, np.zeros(4, np.float16)))
    twice = RingAllreduce(comm, np.zeros(4)).start()
    attempt("start_twice", twice.start)
    twice.wait()
    first = RingAllreduce(comm, np.ones(5), tag=9).start()
    attempt("tag_in_flight", lambda: RingAllreduce(comm, np.ones(5), tag=9).start())
    ok = np.array_equal(first.wait(), np.full(5, float(N)))
    return found, bool(ok)


def page_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def scratch_cache_checks():
    """The communicator's cached receive buffers: a blocking collective gives its buffer
    back for the next one (the same memory), the cache grows only to the largest need,
    and a repeated large ring no longer faults its receive buffer in on every call."""
    comm.drop_scratch_cache()
    f32 = np.dtype(np.float32)
    found = {"empty_after_drop": comm.scratch_cache_bytes == 0}
    count = 2 << 20  # 8 MiB of float32: a 4 MiB chunk at N = 2 (1024 pages)
    x = np.ones(count, np.float32)
    ring_allreduce(comm, x)
    chunk = -(-count // N) if N > 1 else 0
    found["cache_after_ring"] = comm.scratch_cache_bytes
    found["chunk_bytes"] = chunk * 4
    before = page_faults()
    for _ in range(4):
        ring_allreduce(comm, x)
    found["faults_per_ring"] = (page_faults() - before) / 4
    found["pages_per_chunk"] = chunk * 4 / resource.getpagesize()
    probe = comm.take_scratch(chunk, f32)  # the ring's buffer, back in the cache
    comm.return_scratch(probe)
    reused = {}
    for name, fn in (("ring", ring_allreduce), ("rd", recursive_doubling_allreduce),
                     ("rab", rabenseifner_allreduce), ("auto", allreduce)):
        fn(comm, np.ones(1000, np.float64))  # smaller than the ring's chunk: no new buffer
        again = comm.take_scratch(chunk, f32)
        reused[name] = bool(np.shares_memory(again, probe)) if N > 1 else True
        comm.return_scratch(again)
    found["reused"] = reused
    found["cache_after_small"] = comm.scratch_cache_bytes
    big = np.ones(2 * count, np.float32)  # twice as large: the one buffer is replaced
    recursive_doubling_allreduce(comm, big)
    found["cache_after_big"] = comm.scratch_cache_bytes
    found["big_bytes"] = big.nbytes if N > 1 else 0
    found["ok"] = bool(np.all(x == N ** 5) and np.all(big == N))
    found["held_after"] = comm.ledger.current_temp_bytes
    return found


def nonblocking_all():
    counts = sorted({0, 1, max(N - 1, 0), N, N + 1, 2 * N, BIG_PRIME})
    cases, turn = [], 0
    for dtype in NB_DTYPES:
        for count in counts:
            for op in (["sum", "mean"] if dtype != "int64" else ["sum", "max"]):
                cases.append(nonblocking_case(dtype, count, op, DRIVES[turn % len(DRIVES)]))
                turn += 1
    errors, after_ok = nonblocking_errors()
    return {"cases": cases, "concurrent": {o: concurrent_rings(o) for o in ("poll", "reverse")},
            "errors": errors, "after_errors_ok": after_ok}


def main(mode):
    counts = sorted({0, 1, max(N - 1, 0), N, N + 1, 2 * N, BIG_PRIME})
    for dtype in DTYPES:
        for count in counts:
            all_cases(count, dtype, full=(mode == "all"))
    nonblocking = nonblocking_all() if mode == "all" else None
    cache = scratch_cache_checks() if mode == "all" else None
    result = {"nonblocking": nonblocking, "cache": cache, "cases": cases, "ledger": comm.ledger.by_phase(),
              "peak_temp_bytes": comm.ledger.peak_temp_bytes,
              "current_temp_bytes": comm.ledger.current_temp_bytes}
    if mode == "all":
        result["depth"] = binomial_depth_logs()
        result["errors"], result["after_errors_ok"] = error_cases()
    emit(result)


main(sys.argv[1] if len(sys.argv) > 1 else "all")
