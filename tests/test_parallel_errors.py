"""A model that differs on one rank fails at wrap time, on every rank, fast, with a message
naming the rank, the parameter and both shapes (no hang: the job exits non-zero)."""
import time

import pytest

from mpi_util import launch


def run_failing(n, *args, timeout=60):
    t0 = time.perf_counter()
    proc = launch(n, "parallel_mismatch.py", *args, timeout=timeout)
    return proc, time.perf_counter() - t0


@pytest.mark.mpi
@pytest.mark.parametrize("n, strategy", [(3, "ddp"), (2, "hub")])
def test_model_differing_on_one_rank_fails_at_wrap(n, strategy):
    proc, seconds = run_failing(n, strategy)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "wrap returned" not in output
    last = n - 1
    assert (f"parameter '0.weight' has shape (13, 5) on rank {last} but shape (12, 5) on rank 0"
            in output), output[-3000:]
    assert seconds < 30
