"""Collectives called inconsistently across ranks, under a plain mpiexec
(tests/mpi/comm_mismatch.py): with MINIDIST_DEBUG=1 every mismatch raises on the ranks
with one message listing each rank's call (a skipped last call: the watchdog, at 2 s); no
rank returns a result; the job ends non-zero within seconds. Without debug mode: models
whose buffers differ fail at wrap, and DDP models stepped in another order are named by
the watchdog."""
from __future__ import annotations

import time

import pytest

from mpi_util import launch

pytestmark = pytest.mark.mpi
DEBUG_CASES = ("count", "dtype", "dtype-bytes", "op", "root-gather", "root-reduce",
               "root-broadcast", "algorithm", "skip", "models-ddp", "models-dp")
FIELDS = {"count": "count", "dtype": "dtype", "dtype-bytes": "count, dtype", "op": "op",
          "root-gather": "root", "root-reduce": "root", "root-broadcast": "root",
          "algorithm": "algorithm", "skip": "collective", "models-ddp": "model", "models-dp": "model"}


def run_case(n, case, debug=True, monkeypatch=None):
    monkeypatch.setenv("MINIDIST_TIMEOUT", "2")
    monkeypatch.setenv("MINIDIST_DEBUG", "1" if debug else "0")
    started = time.perf_counter()
    proc = launch(n, "comm_mismatch.py", case, timeout=60, mpi4py=False)
    return proc, time.perf_counter() - started


def no_rank_returned(proc, ranks):
    for r in ranks:
        assert f"rank {r}: returned" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("n", (2, 3))
def test_the_control_case_runs_in_debug_mode(n, monkeypatch):
    proc, _ = run_case(n, "agree", monkeypatch=monkeypatch)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("n", (2, 3))
@pytest.mark.parametrize("case", DEBUG_CASES)
def test_debug_mode_names_each_ranks_call(n, case, monkeypatch):
    proc, seconds = run_case(n, case, monkeypatch=monkeypatch)
    err = proc.stderr
    assert proc.returncode != 0
    no_rank_returned(proc, range(n))
    assert f"(different {FIELDS[case]}; ranks differing from rank 0: [{n - 1}])" in err, err[-3000:]
    for r in range(n):
        assert f"  rank {r}: #" in err, err[-3000:]
    if case.startswith("models"):
        assert "Wrapped models are stepped in a different order" in err
    assert seconds < 30  # an abort takes about a second; a hang would take the 60 s timeout


@pytest.mark.parametrize("n", (2, 3))
def test_a_skipped_last_call_is_caught_by_the_watchdog(n, monkeypatch):
    proc, seconds = run_case(n, "skip-last", monkeypatch=monkeypatch)
    assert proc.returncode == 124
    no_rank_returned(proc, range(n - 1))
    assert "minidist watchdog: the debug check before ring_allreduce" in proc.stderr
    assert f"still waiting for rank(s) [{n - 1}]" in proc.stderr, proc.stderr[-3000:]
    assert seconds < 30


@pytest.mark.parametrize("n", (2, 3))
def test_buffers_that_differ_fail_at_wrap_on_every_rank(n, monkeypatch):
    proc, _ = run_case(n, "norms", debug=False, monkeypatch=monkeypatch)
    assert proc.returncode == 1
    no_rank_returned(proc, range(n))
    assert (f"the model differs across ranks: rank {n - 1} has 4 parameters and 0 buffers but rank 0 "
            "has 4 and 3; the first extra one, on rank 0, is buffer '1.running_mean'") in proc.stderr


@pytest.mark.parametrize("strategy", ("dp", "ddp"))
def test_models_stepped_in_another_order_are_named_by_the_watchdog(strategy, monkeypatch):
    """Without debug mode: each model's messages have tags of their own (ddp: its buckets';
    dp, hub: the collectives' tags are shifted while a model steps), so they never mix; the
    ranks wait, and the watchdog names the model each rank is stepping."""
    proc, _ = run_case(3, f"models-{strategy}", debug=False, monkeypatch=monkeypatch)
    assert proc.returncode == 124
    no_rank_returned(proc, range(3))
    assert "minidist watchdog:" in proc.stderr and "model #" in proc.stderr, proc.stderr[-3000:]
    if strategy == "dp":
        assert "every rank must step them in the same order" in proc.stderr
