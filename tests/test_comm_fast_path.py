"""`allreduce`'s fast path (`allreduce._known_call`: a call like one that passed every check
before; `latency.latency_allreduce`: small recursive doubling on a power-of-two N) changes
nothing but time: bad arguments still raise after good calls of the same shape, a timeline
still records, results, ledgers and errors are the full path's (tests/mpi/comm_fast_path.py),
and a rank that skips a call or fails still ends the job (the watchdog, fail-stop)."""
from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from minidist.comm import Communicator, allreduce
from minidist.comm.allreduce import _known_call, forget_known_calls
from minidist.comm.clock import ClockSync
from minidist.comm.scratch import KEPT_OBJECTS
from minidist.comm.timeline import Timeline
from mpi_util import launch, run_mpi

SHAPE = (4, 256)


@pytest.fixture
def comm():
    forget_known_calls()
    return Communicator()


def read_only():
    x = np.ones(SHAPE, np.float32)
    x.flags.writeable = False
    return x


BAD_CALLS = {  # name: (good dtype, bad array, op, algorithm, error, words)
    "fortran order": (np.float32, lambda: np.asfortranarray(np.ones(SHAPE, np.float32)), "sum", "auto",
                      ValueError, "not C-contiguous"),
    "strided": (np.float32, lambda: np.ones((4, 512), np.float32)[:, ::2], "sum", "auto", ValueError,
                "not C-contiguous"),
    "read-only": (np.float32, read_only, "sum", "auto", ValueError, "read-only"),
    "big-endian": (np.float32, lambda: np.ones(SHAPE, ">f4"), "sum", "auto", TypeError, "unsupported dtype"),
    "float16": (np.float32, lambda: np.ones((8, 256), np.float16), "sum", "auto", TypeError, "unsupported dtype"),
    "a list": (np.float32, lambda: [1.0] * 1024, "sum", "auto", TypeError, "must be a numpy.ndarray"),
    "unknown op": (np.float32, lambda: np.ones(SHAPE, np.float32), "prod", "auto", ValueError, "unknown op"),
    "integer mean": (np.int64, lambda: np.ones(SHAPE, np.int64), "mean", "auto", TypeError, "floating dtype"),
    "unknown algorithm": (np.float32, lambda: np.ones(SHAPE, np.float32), "sum", "tree", ValueError,
                          "unknown algorithm"),
    "unhashable algorithm": (np.float32, lambda: np.ones(SHAPE, np.float32), "sum", ["auto"], ValueError,
                             "unknown algorithm"),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_a_bad_argument_still_raises_after_good_calls_of_the_same_shape(comm, name):
    dtype, bad, op, algorithm, error, words = BAD_CALLS[name]
    good = np.ones(SHAPE, dtype)
    for _ in range(2):
        allreduce(comm, good, "sum", "auto")
        allreduce(comm, good, "mean" if dtype == np.float32 else "max", "auto")
    assert _known_call(comm, good, "sum", "auto") is not None  # the fast path is on for this shape
    calls = comm.calls
    with pytest.raises(error, match=words):
        allreduce(comm, bad(), op, algorithm)
    assert comm.calls == calls and comm.operation is None  # raised before the call began


def test_the_fast_path_steps_aside_for_a_timeline_debug_mode_and_nested_calls(comm):
    x = np.ones(SHAPE, np.float32)
    for _ in range(2):
        allreduce(comm, x)
    assert _known_call(comm, x, "sum", "auto") is not None
    comm.timeline = Timeline(ClockSync(0.0, 0.0, (0.0,), (0.0,), 1, time.perf_counter), rank=0)
    allreduce(comm, x)
    assert [c.name for c in comm.timeline._calls] == ["allreduce"]  # recorded, as on the full path
    assert _known_call(comm, x, "sum", "auto") is None
    comm.timeline = None
    comm.debug = True
    assert _known_call(comm, x, "sum", "auto") is None
    comm.debug = False
    with comm.collective("outer"):
        assert _known_call(comm, x, "sum", "auto") is None
    assert _known_call(comm, x, "sum", "auto") is not None


@functools.lru_cache(maxsize=None)
def compared(n: int) -> tuple:
    return tuple(run_mpi(n, "comm_fast_path.py", "compare", timeout=180))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_results_ledgers_and_errors_are_the_full_paths(n):
    for rank, found in enumerate(compared(n)):
        on, off = found["on"], found["off"]
        assert on["digests"] == off["digests"], f"rank {rank}: results differ"
        assert on["log"] == off["log"], f"rank {rank}: ledger logs differ"
        assert on["scratch"] == off["scratch"] and on["calls"] == off["calls"]
        assert on["scratch"][1] == 0 and on["scratch"][0] >= 20000 * 8  # the 20000-element rd
        assert found["errors_on"] == found["errors_off"]
        assert found["errors_on"]["debug"].startswith("RuntimeError: minidist debug: the ranks disagree")
        assert found["errors_on"]["after_errors_ok"] and found["errors_on"]["after_drop_ok"]
        kept, dropped = found["errors_on"]["kept_then_dropped"]
        assert dropped == 0 and kept >= (2 * 8 * 4 if n in (2, 4) else 0)  # the exchanges' two buffers
        if n == 2:
            assert "same shape and dtype" in found["errors_on"]["shorter"]
            assert "same shape and dtype" in found["errors_on"]["longer"]
        assert found["table"]["messages_ring_call"] == 2 * (n - 1)  # the new table's ring
        kinds = found["kinds"]
        assert kinds["ok"] and kinds["same"] and kinds["kept"] == (KEPT_OBJECTS if n in (2, 4) else 0)


def test_digests_agree_across_ranks():
    first = compared(2)[0]["on"]["digests"]
    assert all(r["on"]["digests"] == first for r in compared(2))


@pytest.mark.parametrize("mode, words", [
    ("skip", "minidist watchdog: allreduce (phase 'default') waited 2.0 s"),
    ("die", "[rank 1/2] RuntimeError: injected failure instead of a repeated allreduce"),
])
def test_a_rank_that_skips_or_fails_a_repeated_call_ends_the_job(monkeypatch, mode, words):
    monkeypatch.setenv("MINIDIST_TIMEOUT", "2")
    started = time.perf_counter()
    proc = launch(2, "comm_fast_path.py", mode, timeout=60, mpi4py=False)
    assert proc.returncode != 0
    assert words in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert time.perf_counter() - started < 30


def test_persistent_requests_are_freed_before_mpi_finalizes():
    """Those of a dropped communicator, those the scratch cache let go, and those still
    kept when the program calls MPI.Finalize() itself: MPICH names any left over."""
    proc = launch(2, "comm_fast_path.py", "finalize", timeout=60, mpi4py=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "persistent request" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
