"""A failure on one rank ends the whole job quickly, with its message, instead of leaving
the other ranks waiting, under a plain mpiexec (tests/mpi/comm_failures.py). The fault
matrix over strategies and launches is tests/test_faults.py."""
from __future__ import annotations

import time

import pytest

from mpi_util import run_mpi

TIMEOUT = 30  # a hang would hit this; an abort takes about a second


def expect_abort(n, mode, *words):
    started = time.perf_counter()
    with pytest.raises(AssertionError) as failure:
        run_mpi(n, "comm_failures.py", mode, timeout=TIMEOUT, mpi4py=False)
    report = str(failure.value)
    assert "timed out" not in report, report
    assert "exited" in report, report
    for word in words:
        assert word in report, report
    assert time.perf_counter() - started < TIMEOUT / 2


def test_control_run_succeeds():
    assert [r["sum"] for r in run_mpi(3, "comm_failures.py", "ok", timeout=TIMEOUT,
                                      mpi4py=False)] == [3.0] * 3


def test_uncaught_exception_under_a_plain_mpiexec_aborts_the_job():
    expect_abort(3, "uncaught", "[rank 2/3] RuntimeError: uncaught failure on rank 2")


def test_a_rank_failing_before_any_communicator_ends_the_job():
    """`import minidist` alone turns fail-stop on (the launcher says there are N ranks)."""
    expect_abort(2, "early", "[rank 1/2] RuntimeError: failure before any Communicator")


def test_abort_prints_rank_and_message():
    expect_abort(2, "abort", "[rank 1/2] rank gave up on purpose")


def test_mismatched_lengths_are_reported_not_hung():
    """Without debug mode: the ranks that see the odd message say so in plain words, and
    fail-stop ends the others (never MPI's 'See the MPI_ERROR field')."""
    expect_abort(3, "mismatch", "same shape and dtype", "ring_allreduce")
    with pytest.raises(AssertionError) as failure:
        run_mpi(3, "comm_failures.py", "mismatch", timeout=TIMEOUT, mpi4py=False)
    assert "MPI_ERROR" not in str(failure.value)
