"""The ring all-reduce's cached per-call setup (minidist/comm/ring_plan.py): results stay
exact when the same arrays come again, when new ones do, and past the cache's size."""
import numpy as np
import pytest

from minidist.comm import ring_plan
from minidist.comm.ring import RingSteps
from mpi_util import run_mpi


@pytest.mark.mpi
@pytest.mark.parametrize("n", [2, 3])
def test_repeated_ring_allreduces_stay_exact(n):
    for r in run_mpi(n, "ring_plan_reuse.py", timeout=180):
        assert r["ok"] and r["calls"] > 40 and 0 < r["plans"] <= r["max"]


def test_same_arrays_get_the_same_plan_and_large_ones_none():
    ring_plan.clear()
    flat, buf = np.zeros(10), np.empty(5)
    first = ring_plan.ring_steps(flat, 0, 2, "sum", np.add, buf)
    assert isinstance(first, RingSteps) and ring_plan.ring_steps(flat, 0, 2, "sum", np.add, buf) is first
    assert ring_plan.ring_steps(flat, 1, 2, "sum", np.add, buf) is not first  # another rank's schedule
    assert ring_plan.ring_steps(flat, 0, 2, "mean", np.add, buf) is not first
    big = np.zeros(ring_plan.MAX_PLAN_BYTES // 8 + 1)
    plans = len(ring_plan._plans)
    ring_plan.ring_steps(big, 0, 2, "sum", np.add, np.empty(big.size))
    assert len(ring_plan._plans) == plans  # not cached
    ring_plan.clear()
