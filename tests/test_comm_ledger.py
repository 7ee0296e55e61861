"""The ledger, the Communicator and every collective in a world of one rank (plain
pytest, no mpiexec: messages to ourselves are real MPI messages)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from minidist.comm import (Communicator, Ledger, allreduce, broadcast, gather_to_root,
                           mpi_allreduce, rabenseifner_allreduce, recursive_doubling_allreduce,
                           reduce_to_root, ring_allgather, ring_allreduce, ring_reduce_scatter,
                           scatter)
from minidist.comm.checks import check_array, check_op, check_root, chunk_bounds


@pytest.fixture
def comm():
    return Communicator()


# ---- Ledger alone -----------------------------------------------------------------------
def test_totals_by_phase_and_peer():
    led = Ledger()
    led.record("a", 1, "send", 100, 0.5)
    led.record("a", 1, "send", 20, 0.25)
    led.record("a", 2, "recv", 7, 1.0)
    led.record("b", 1, "recv", 3, 0.0, messages=4)
    led.record("b", None, "mpi", 999, 2.0)
    assert led.totals("a") == {"bytes_sent": 120, "bytes_received": 7, "messages_sent": 2,
                               "messages_received": 1, "seconds": 1.75, "wait_seconds": 0.0}
    assert led.totals() == {"bytes_sent": 120, "bytes_received": 10, "messages_sent": 2,
                            "messages_received": 5, "seconds": 3.75, "wait_seconds": 0.0}
    assert led.totals("never") == {"bytes_sent": 0, "bytes_received": 0, "messages_sent": 0,
                                   "messages_received": 0, "seconds": 0.0, "wait_seconds": 0.0}
    assert list(led.by_phase()) == ["a", "b"] and led.by_phase()["b"]["messages_received"] == 4
    assert led.by_peer() == {1: {"bytes_sent": 120, "bytes_received": 3, "messages_sent": 2,
                                 "messages_received": 4},
                             2: {"bytes_sent": 0, "bytes_received": 7, "messages_sent": 0,
                                 "messages_received": 1}}


def test_records_aggregated_or_detailed_share_one_schema():
    quiet, loud = Ledger(), Ledger(detailed=True)
    for led in (quiet, loud):
        led.record("p", 3, "send", 8, 0.1)
        led.record("p", 3, "send", 8, 0.1)
    assert quiet.records() == [{"phase": "p", "peer": 3, "direction": "send", "messages": 2,
                                "bytes": 16, "seconds": pytest.approx(0.2)}]
    assert [r["messages"] for r in loud.records()] == [1, 1]
    assert set(loud.records()[0]) == set(quiet.records()[0])
    json.dumps(quiet.records() + loud.records())  # JSON-ready


def test_reset_and_scratch_peak():
    led = Ledger()
    led.alloc(100)
    with led.temporary(50):
        assert led.current_temp_bytes == 150
    assert (led.current_temp_bytes, led.peak_temp_bytes) == (100, 150)
    led.record("x", 0, "send", 1, 0.0)
    led.reset()
    assert led.records() == [] and led.totals()["messages_sent"] == 0
    assert led.peak_temp_bytes == 100  # the peak restarts from what is still held
    led.alloc(5)
    led.free(5)
    led.reset_peak()
    assert led.peak_temp_bytes == 100
    with pytest.raises(ValueError, match="exceeds the 100 scratch bytes"):
        led.free(101)
    with pytest.raises(RuntimeError):
        with led.temporary(10):
            raise RuntimeError("inside")
    assert led.current_temp_bytes == 100  # released even on error


def test_bookkeeping_is_cheap():
    """Well under 5% of a 1 MiB transfer (~100 us in shared memory): bound it at 5 us."""
    led = Ledger()
    start = time.perf_counter()
    for i in range(20000):
        led.record("grad-allreduce", i % 4, "send", 1 << 20, 1e-4)
    assert (time.perf_counter() - start) / 20000 < 5e-6


# ---- Communicator, one rank -----------------------------------------------------------------
def test_phases_nest_and_restore(comm):
    assert comm.current_phase == "default"
    with comm.phase("outer"):
        with pytest.raises(KeyError):
            with comm.phase("inner"):
                assert comm.current_phase == "inner"
                raise KeyError("boom")
        assert comm.current_phase == "outer"
    assert comm.current_phase == "default"


def test_point_to_point_to_self_is_recorded(comm):
    out = np.zeros(5)
    with comm.phase("p2p"):
        assert comm.sendrecv(np.arange(5.0), 0, out, 0, tag=3) == 40
        send, recv = comm.ledger.records()
    assert out.tolist() == [0, 1, 2, 3, 4]
    assert (send["direction"], send["bytes"], send["seconds"]) == ("send", 40, 0.0)
    assert (recv["direction"], recv["bytes"]) == ("recv", 40) and recv["seconds"] > 0
    with comm.phase("async"):
        got = np.zeros(3, np.int64)
        r = comm.irecv(got, 0, tag=9)
        s = comm.isend(np.array([7, 8, 9]), 0, tag=9)
    comm.waitall([s, r])
    r.wait()  # a second wait is harmless and records nothing more
    assert r.test() and s.test()
    assert got.tolist() == [7, 8, 9]
    assert comm.ledger.totals("async") == {"bytes_sent": 24, "bytes_received": 24, "messages_sent": 1,
                                           "messages_received": 1, "seconds": pytest.approx(
                                               comm.ledger.totals("async")["seconds"]),
                                           "wait_seconds": 0.0}
    pending = comm.isend(np.ones(2), 0, tag=4)  # a blocking Send to ourselves may never return
    assert comm.recv(np.zeros(4), 0, tag=4) == 16  # returns what arrived, not the buffer size
    pending.wait()
    with comm.phase("polled"):
        late = comm.irecv(np.zeros(1), 0, tag=6)
    assert late.test() is False  # nothing sent yet: not complete, not recorded
    assert comm.ledger.totals("polled")["messages_received"] == 0
    early = comm.isend(np.ones(1), 0, tag=6)
    while not late.test():
        pass
    early.wait()
    assert comm.ledger.totals("polled")["messages_received"] == 1


def test_a_too_long_message_says_what_is_wrong(comm):
    pending = comm.isend(np.ones(8), 0, tag=5)
    with pytest.raises(ValueError, match="larger than the receive buffer .*same shape and dtype"):
        comm.recv(np.zeros(2), 0, tag=5)
    pending.wait()


def test_barrier_on_one_rank(comm):
    comm.barrier()
    assert comm.ledger.totals()["messages_sent"] == 0  # log2(1) = 0 rounds


# ---- collectives on one rank ---------------------------------------------------------------
@pytest.mark.parametrize("fn", [ring_allreduce, recursive_doubling_allreduce,
                                rabenseifner_allreduce, mpi_allreduce, allreduce])
@pytest.mark.parametrize("op", ["sum", "mean", "max"])
def test_allreduces_on_one_rank_return_x_unchanged(comm, fn, op):
    x = np.arange(6.0).reshape(2, 3)
    assert fn(comm, x, op=op) is x and x.tolist() == np.arange(6.0).reshape(2, 3).tolist()


def test_rooted_and_ring_collectives_on_one_rank(comm):
    x = np.arange(7, dtype=np.int64)
    g = gather_to_root(comm, x)
    assert g.shape == (1, 7) and np.array_equal(g[0], x)
    for algorithm in ("linear", "binomial"):
        r = reduce_to_root(comm, x, algorithm=algorithm)
        assert r is not x and np.array_equal(r, x)
        assert broadcast(comm, x, algorithm=algorithm) is x
    s = scatter(comm, x)
    assert s is not x and np.array_equal(s, x)
    rs = ring_reduce_scatter(comm, x)
    assert not np.shares_memory(rs, x) and np.array_equal(rs, x)
    assert np.array_equal(ring_allgather(comm, x), x)
    assert comm.ledger.totals()["messages_sent"] == 0
    assert gather_to_root(comm, np.full((), 3.0)).shape == (1,)  # 0-d input


def test_checks_name_the_problem():
    with pytest.raises(TypeError, match=r"unsupported dtype float16.*float32, float64, int64"):
        check_array(np.zeros(2, np.float16))
    with pytest.raises(ValueError, match=r"not C-contiguous \(shape \(2, 2\)"):
        check_array(np.zeros((2, 2)).T)
    with pytest.raises(ValueError, match="root=5 is outside \\[0, 4\\)"):
        check_root(5, 4)
    with pytest.raises(TypeError, match="root must be an int"):
        check_root(1.0, 4)
    with pytest.raises(TypeError, match="floating dtype"):
        check_op("mean", np.int64)
    assert chunk_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert [b - a for a, b in chunk_bounds(2, 4)] == [len(c) for c in np.array_split(np.zeros(2), 4)]


# ---- the Sendrecv fast path and the scratch cache -------------------------------------------
def test_record_exchange_equals_a_send_and_a_receive():
    for detailed in (False, True):
        one, two = Ledger(detailed), Ledger(detailed)
        steps = [("a", 1, 40, 2, 32, 0.5), ("a", 1, 40, 2, 32, 0.25), ("b", 1, 8, 2, 8, 1.0),
                 ("a", 3, 16, 3, 16, 0.0), ("a", 1, 40, 2, 32, 0.125)]
        for phase, dest, sent, source, received, seconds in steps:
            one.record_exchange(phase, dest, sent, source, received, seconds)
            two.record(phase, dest, "send", sent, 0.0)
            two.record(phase, source, "recv", received, seconds)
        assert one.records() == two.records()
        assert one.by_phase() == two.by_phase() and one.by_peer() == two.by_peer()
        one.reset()  # the remembered counters go with the reset
        one.record_exchange("a", 1, 40, 2, 32, 0.5)
        assert one.totals() == {"bytes_sent": 40, "bytes_received": 32, "messages_sent": 1,
                                "messages_received": 1, "seconds": 0.5, "wait_seconds": 0.0}


def test_scratch_cache_reuses_grows_and_never_shares_a_buffer_in_use(comm):
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    led = comm.ledger
    comm.drop_scratch_cache()
    a = comm.take_scratch(1000, f32)
    assert (a.shape, a.dtype, a.flags.c_contiguous, a.flags.writeable) == ((1000,), f32, True, True)
    assert led.current_temp_bytes == 4000 and comm.scratch_cache_bytes == 0  # in use, not idle
    b = comm.take_scratch(10, f64)  # taken while `a` is in use: a buffer of its own
    assert not np.shares_memory(a, b) and led.current_temp_bytes == 4080
    comm.return_scratch(a)
    comm.return_scratch(b)
    assert led.current_temp_bytes == 0 and comm.scratch_cache_bytes == 4080
    small = comm.take_scratch(5, f64)  # best fit: the 80-byte buffer, not the 4000-byte one
    assert np.shares_memory(small, b) and led.current_temp_bytes == 40
    comm.return_scratch(small)
    same = comm.take_scratch(500, f64)  # another dtype from the same bytes
    assert np.shares_memory(same, a) and same.dtype == f64
    comm.return_scratch(same)
    big = comm.take_scratch(2000, f32)  # nothing fits: the largest idle one is replaced
    assert not np.shares_memory(big, a) and comm.scratch_cache_bytes == 80
    comm.return_scratch(big)
    assert comm.scratch_cache_bytes == 8080 and led.peak_temp_bytes >= 8000
    comm.drop_scratch_cache()
    assert comm.scratch_cache_bytes == 0 and led.current_temp_bytes == 0
    once = comm.take_scratch(4, f32)
    comm.return_scratch(once)
    with pytest.raises(ValueError, match="exceeds"):  # returned twice: the ledger objects,
        comm.return_scratch(once)                      # before the cache would list it twice
    assert comm.scratch_cache_bytes == 16
    comm.drop_scratch_cache()
    wide = comm.take_scratch(1000, f32)
    comm.return_scratch(wide)
    narrow, other = comm.take_scratch(10, f32), comm.take_scratch(10, f32)  # from wide's 4000 B, then new
    comm.return_scratch(other)
    comm.return_scratch(narrow)  # last back, but cut from 4000 B: no exact fit, so best fit decides
    assert np.shares_memory(comm.take_scratch(10, f32), other) and comm.scratch_cache_bytes == 4000
    comm.drop_scratch_cache()
