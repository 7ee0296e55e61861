"""Every collective on N = 1..5 ranks (and the ring all-reduce on 7), against NumPy.

One mpiexec launch per N runs every case (tests/mpi/comm_collectives.py) and is cached
for the module; the tests below read from it: results vs NumPy's sum over the ranks'
inputs, in-place semantics, bit-identical results on every rank, ledger counts vs the
closed forms of counts.py, the binomial broadcast's depth, and error handling.
"""
from __future__ import annotations

import functools

import pytest

from minidist.cost.counts import ceil_log2, message_counts, rounds, scratch_bytes
from mpi_util import run_mpi

SIZES = [1, 2, 3, 4, 5]
ALL_RANKS_EQUAL = {"ring_allreduce", "recursive_doubling_allreduce", "rabenseifner_allreduce",
                   "allreduce", "mpi_allreduce", "ring_allgather", "broadcast"}
IN_PLACE = {"ring_allreduce", "recursive_doubling_allreduce", "rabenseifner_allreduce",
            "allreduce", "mpi_allreduce", "broadcast"}


@functools.lru_cache(maxsize=None)
def launch(n: int, mode: str = "all") -> tuple:
    return tuple(run_mpi(n, "comm_collectives.py", mode, timeout=120))


def cases_by_key(results):
    """{case key: [rank 0's case, rank 1's case, ...]}"""
    table = {}
    for rank_result in results:
        for case in rank_result["cases"]:
            table.setdefault(case["key"], []).append(case)
    return table


@pytest.mark.parametrize("n", SIZES)
def test_every_collective_matches_numpy(n):
    results = launch(n)
    table = cases_by_key(results)
    collectives = {c[0]["collective"] for c in table.values()}
    assert collectives >= {"ring_allreduce", "ring_reduce_scatter", "ring_allgather",
                           "gather_to_root", "reduce_to_root", "broadcast", "scatter",
                           "recursive_doubling_allreduce", "rabenseifner_allreduce",
                           "allreduce", "mpi_allreduce"}
    assert {c[0]["count"] for c in table.values()} >= {0, 1, n, n + 1, 2 * n, 100003}
    assert {c[0]["dtype"] for c in table.values()} == {"float32", "float64", "int64"}
    wrong = [(key, rank) for key, per_rank in table.items()
             for rank, case in enumerate(per_rank) if not case["ok"]]
    assert wrong == []


@pytest.mark.parametrize("n", SIZES)
def test_in_place_collectives_return_their_input(n):
    for key, per_rank in cases_by_key(launch(n)).items():
        case = per_rank[0]
        if case["collective"] in IN_PLACE:
            assert all(c["inplace"] is True for c in per_rank), key
        if case["collective"] in ("ring_reduce_scatter", "reduce_to_root"):
            assert all(c["inplace"] in (False, None) for c in per_rank), key  # a new array
        if case["collective"] == "ring_allgather" and "|out|" in key:
            assert all(c["inplace"] is True for c in per_rank), key  # returns `out`


@pytest.mark.parametrize("n", SIZES)
def test_results_are_bit_identical_on_every_rank(n):
    for key, per_rank in cases_by_key(launch(n)).items():
        if per_rank[0]["collective"] in ALL_RANKS_EQUAL:
            hashes = {c["hash"] for c in per_rank}
            assert len(hashes) == 1 and None not in hashes, key


def _expected_counts(case, n, rank):
    collective, algorithm = case["collective"], case["algorithm"]
    return message_counts(collective, n, rank, case["count"], case["itemsize"],
                          root=case["root"], algorithm=algorithm)


@pytest.mark.parametrize("n", SIZES)
def test_ledger_matches_closed_form_counts(n):
    results = launch(n)
    checked = 0
    for rank, rank_result in enumerate(results):
        ledger = rank_result["ledger"]
        for case in rank_result["cases"]:
            got = {k: v for k, v in ledger.get(case["key"], {}).items() if not k.endswith("seconds")}
            if not got:  # a phase with no messages at all (N = 1) leaves no ledger entry
                got = {"messages_sent": 0, "messages_received": 0, "bytes_sent": 0, "bytes_received": 0}
            if case["collective"] == "mpi_allreduce":  # MPI's own: no messages of ours
                assert got == {"messages_sent": 0, "messages_received": 0, "bytes_sent": 0,
                               "bytes_received": 0}, case["key"]
                continue
            assert got == _expected_counts(case, n, rank), (case["key"], rank)
            checked += 1
    assert checked > 100 * n


@pytest.mark.parametrize("n", SIZES)
def test_scratch_peak_matches_the_closed_form(n):
    checked = 0
    for rank, rank_result in enumerate(launch(n)):
        for case in rank_result["cases"]:
            if case["collective"] == "mpi_allreduce":  # MPI's own buffers are not ours to count
                continue
            want = scratch_bytes(case["collective"], n, rank, case["count"], case["itemsize"],
                                 root=case["root"], algorithm=case["algorithm"])
            assert case["scratch"] == want, (case["key"], rank)
            checked += want > 0
    assert checked == 0 if n == 1 else checked > 10 * n  # one rank needs no scratch


@pytest.mark.parametrize("n", SIZES)
def test_scratch_memory_is_reported_and_released(n):
    for rank_result in launch(n):
        assert rank_result["current_temp_bytes"] == 0
        if n > 1:  # the ring of a 100003-element float64 buffer holds one chunk, at least
            assert rank_result["peak_temp_bytes"] >= -(-100003 // n) * 8


def _broadcast_depth(logs_per_rank, root, n):
    """Replay each rank's ordered messages as a logical clock: the root starts at round 0;
    a rank's k-th send leaves at (the round it received) + k."""
    received_at = {root: 0}
    pending = [root]
    while pending:
        rank = pending.pop()
        sends = [peer for direction, peer in logs_per_rank[rank] if direction == "send"]
        for k, child in enumerate(sends, start=1):
            assert child not in received_at, f"rank {child} received twice"
            received_at[child] = received_at[rank] + k
            pending.append(child)
    assert sorted(received_at) == list(range(n)), "some rank never received"
    for rank in range(n):
        recvs = [m for m in logs_per_rank[rank] if m[0] == "recv"]
        assert len(recvs) == (0 if rank == root else 1)
    return max(received_at.values())


@pytest.mark.parametrize("n", SIZES)
def test_broadcast_depth(n):
    results = launch(n)
    for root in range(n):
        for algorithm, want in (("binomial", ceil_log2(n)), ("linear", n - 1)):
            phase = f"depth|{algorithm}|{root}"
            depth = _broadcast_depth([r["depth"][phase] for r in results], root, n)
            assert depth == want == rounds("broadcast", n, algorithm), (phase, depth)


ERRORS = {  # case -> (exception type, words its message must contain)
    "readonly": ("ValueError", "read-only"),
    "noncontiguous": ("ValueError", "contiguous"),
    "dtype_int32": ("TypeError", "int32"),
    "dtype_complex": ("TypeError", "complex128"),
    "not_array": ("TypeError", "numpy.ndarray"),
    "mean_int64": ("TypeError", "op='mean'"),
    "bad_op": ("ValueError", "prod"),
    "bcast_algorithm": ("ValueError", "tree"),
    "allreduce_algorithm": ("ValueError", "butterfly"),
    "allgather_chunk_size": ("ValueError", "chunk"),
    "mpi_readonly": ("ValueError", "read-only"),
    "scatter_0d": ("ValueError", "dimensions"),
}


@pytest.mark.parametrize("n", SIZES)
def test_bad_arguments_raise_on_every_rank_without_hanging(n):
    results = launch(n)
    for rank, rank_result in enumerate(results):
        errors = rank_result["errors"]
        for name, (kind, words) in ERRORS.items():
            if name.startswith("scatter_") and rank != n - 1:  # non-roots learn it from the root
                assert errors[name][0] == "ValueError" and "root" in errors[name][1], name
                continue
            assert errors[name] is not None and errors[name][0] == kind, (name, errors[name])
            assert words in errors[name][1], (name, errors[name])
        for name in ("bcast_root_size", "bcast_root_negative", "reduce_root", "gather_root",
                     "scatter_root"):
            assert errors[name][0] == "ValueError" and "outside [0, " in errors[name][1], name
        root_side = errors["scatter_root_passes_none"]
        assert root_side[0] == ("TypeError" if rank == 0 else "ValueError"), root_side
        assert rank_result["after_errors_ok"]  # still in step: the next collective works


def test_ring_allreduce_on_seven_ranks():
    results = launch(7, "ring")
    table = cases_by_key(results)
    assert {c[0]["collective"] for c in table.values()} == {"ring_allreduce"}
    for key, per_rank in table.items():
        assert all(c["ok"] and c["inplace"] for c in per_rank), key
        assert len({c["hash"] for c in per_rank}) == 1, key
        for rank, case in enumerate(per_rank):
            got = {k: v for k, v in results[rank]["ledger"][key].items() if not k.endswith("seconds")}
            assert got == _expected_counts(case, 7, rank), (key, rank)


# ---- the non-blocking ring (RingAllreduce) ---------------------------------------------------
def _nonblocking(n):
    return [r["nonblocking"] for r in launch(n)]


def _ledger_counts(rank_result, phase):
    got = {k: v for k, v in rank_result["ledger"].get(phase, {}).items() if not k.endswith("seconds")}
    return got or {"messages_sent": 0, "messages_received": 0, "bytes_sent": 0, "bytes_received": 0}


@pytest.mark.parametrize("n", SIZES)
def test_nonblocking_ring_gives_the_blocking_rings_bytes(n):
    per_rank = _nonblocking(n)
    cases = per_rank[0]["cases"]
    assert {c["dtype"] for c in cases} == {"float16", "float32", "float64", "int64"}
    assert {c["how"] for c in cases} == {"poll", "wait", "steps"}
    assert {c["count"] for c in cases} >= {0, 1, n, n + 1, 2 * n, 100003}
    for i, case in enumerate(cases):
        ranks = [r["cases"][i] for r in per_rank]
        assert all(c["key"] == case["key"] for c in ranks)
        assert all(c["same_bytes"] and c["ok"] and c["done"] for c in ranks), case["key"]
        assert len({c["hash"] for c in ranks}) == 1, case["key"]  # and the same on every rank
        assert all(c["steps"] == c["total_steps"] == 2 * (n - 1) for c in ranks), case["key"]
        assert all(c["done_at_start"] == (n == 1) for c in ranks), case["key"]


@pytest.mark.parametrize("n", SIZES)
def test_nonblocking_ring_ledger_equals_the_closed_form_counts(n):
    results = launch(n)
    for rank, rank_result in enumerate(results):
        for case in rank_result["nonblocking"]["cases"]:
            want = message_counts("ring_allreduce", n, rank, case["count"], case["itemsize"])
            assert _ledger_counts(rank_result, "nb|" + case["key"]) == want, (case["key"], rank)
            assert _ledger_counts(rank_result, "nbref|" + case["key"]) == want, (case["key"], rank)


@pytest.mark.parametrize("n", SIZES)
def test_float16_ring_sums_in_half_precision(n):
    """The fp16 cases are within N-1 float16 roundings of the exact sum (worker's check),
    and the bytes on the wire are 2 per element."""
    for rank, rank_result in enumerate(launch(n)):
        half = [c for c in rank_result["nonblocking"]["cases"] if c["dtype"] == "float16"]
        assert half and all(c["ok"] and c["itemsize"] == 2 for c in half)
        big = next(c for c in half if c["count"] == 100003)
        sent = _ledger_counts(rank_result, "nb|" + big["key"])["bytes_sent"]
        assert sent == message_counts("ring_allreduce", n, rank, 100003, 2)["bytes_sent"]
        assert (sent > 0) == (n > 1)


@pytest.mark.parametrize("n", SIZES)
def test_several_nonblocking_rings_in_flight_on_different_tags(n):
    results = launch(n)
    for rank, rank_result in enumerate(results):
        for order, run in rank_result["nonblocking"]["concurrent"].items():
            assert all(run["same_bytes"]) and run["between_ok"], (order, rank)
            assert run["after"] == 0  # every ring's scratch released
            # while all four were in flight, each held one chunk of scratch
            held = sum(-(-count // n) * itemsize for _, count, _, itemsize in run["specs"])
            assert run["held"] == (held if n > 1 else 0), (order, rank)
            for k, (_, count, _, itemsize) in enumerate(run["specs"]):
                got = _ledger_counts(rank_result, f"nbc|{order}|{k}")
                assert got == message_counts("ring_allreduce", n, rank, count, itemsize), (order, k)
    for order in ("poll", "reverse"):
        hashes = [r["nonblocking"]["concurrent"][order]["hashes"] for r in results]
        assert all(h == hashes[0] for h in hashes), order


@pytest.mark.parametrize("n", SIZES)
def test_rings_in_flight_hold_buffers_of_their_own_and_reuse_them_later(n):
    """Re-entrancy of the scratch cache: while four rings are in flight none of their
    buffers is idle in the cache; afterwards the cache holds a buffer per ring (at least
    the bytes they held), and the same four rings again allocate nothing new."""
    for rank_result in launch(n):
        for order, run in rank_result["nonblocking"]["concurrent"].items():
            if n == 1:
                assert run["cache_while"] == run["cache_after"] == run["cache_again"] == 0
                continue
            assert run["cache_while"] == 0, order  # every cached buffer is held by a ring
            assert run["cache_after"] >= run["held"] + run["cache_while"], order
            assert run["cache_again"] == run["cache_after"], order


@pytest.mark.parametrize("n", SIZES)
def test_blocking_collectives_reuse_one_grow_only_receive_buffer(n):
    for rank_result in launch(n):
        cache = rank_result["cache"]
        assert cache["ok"] and cache["empty_after_drop"] and cache["held_after"] == 0
        assert cache["cache_after_ring"] == cache["chunk_bytes"]  # exactly one chunk, kept
        assert all(cache["reused"].values()), cache["reused"]  # the next collective's buffer
        assert cache["cache_after_small"] == cache["chunk_bytes"]  # smaller needs: no growth
        assert cache["cache_after_big"] == cache["big_bytes"]  # replaced by one larger buffer
        if n > 1:  # a fresh 4 MiB buffer per call faults in ~100 pages (THP) to 1024
            assert cache["pages_per_chunk"] >= 256
            assert cache["faults_per_ring"] < 10, cache


NONBLOCKING_ERRORS = {
    "dtype_int32": ("TypeError", "int32"),
    "mean_int64": ("TypeError", "op='mean'"),
    "readonly": ("ValueError", "read-only"),
    "bad_tag": ("ValueError", "tag"),
    "advance_unstarted": ("RuntimeError", "start()"),
    "start_twice": ("RuntimeError", "already started"),
    "float16_elsewhere": ("TypeError", "ring collectives only"),
}


@pytest.mark.parametrize("n", SIZES)
def test_nonblocking_ring_bad_arguments_raise_on_every_rank(n):
    for rank_result in _nonblocking(n):
        errors = rank_result["errors"]
        for name, (kind, words) in NONBLOCKING_ERRORS.items():
            assert errors[name] is not None and errors[name][0] == kind, (name, errors[name])
            assert words in errors[name][1], (name, errors[name])
        if n == 1:  # nothing is ever in flight in a world of one
            assert errors["tag_in_flight"] is None
        else:
            assert errors["tag_in_flight"][0] == "ValueError"
            assert "tag 9 is already used" in errors["tag_in_flight"][1]
        assert rank_result["after_errors_ok"]


@pytest.mark.parametrize("size", range(1, 9))
def test_ring_schedule_passes_each_chunk_along_the_ring(size):
    """What rank r sends at step s is what rank r+1 receives then; a rank sends at step s+1
    what it received at step s; the reduce-scatter brings every chunk but r-1 to rank r,
    ending with chunk r, and the all-gather every chunk but r."""
    from minidist.comm.ring import recv_chunk, send_chunk
    steps = range(2 * (size - 1))
    for r in range(size):
        assert all(send_chunk(r, size, s) == recv_chunk((r + 1) % size, size, s) for s in steps)
        assert all(send_chunk(r, size, s + 1) == recv_chunk(r, size, s) for s in steps)
        reduce_scatter = [recv_chunk(r, size, s) for s in range(size - 1)]
        allgather = [recv_chunk(r, size, s) for s in range(size - 1, 2 * (size - 1))]
        assert sorted(reduce_scatter) == sorted(set(range(size)) - {(r - 1) % size})
        assert reduce_scatter[-1:] == ([r] if size > 1 else [])
        assert sorted(allgather) == sorted(set(range(size)) - {r})
