"""The ring all-reduce's cached per-call setup (minidist/comm/ring_plan.py): results stay
exact when the same arrays come again, when new ones do, and past the cache's size."""
import pytest

from minidist.comm import ring_plan
from minidist.comm.ring import ring_schedule
from mpi_util import run_mpi


@pytest.mark.mpi
@pytest.mark.parametrize("n", [2, 3])
def test_repeated_ring_allreduces_stay_exact(n):
    for r in run_mpi(n, "ring_plan_reuse.py", timeout=180):
        assert r["ok"] and r["calls"] > 40 and 0 < r["plans"] <= r["max"]


def test_the_same_request_gets_the_same_schedule_and_the_cache_is_bounded():
    ring_plan.clear()
    first = ring_plan.cached_schedule(3, 1, 10)
    assert first == list(ring_schedule(3, 1, 10)) and ring_plan.cached_schedule(3, 1, 10) is first
    assert ring_plan.cached_schedule(3, 2, 10) == list(ring_schedule(3, 2, 10))  # another rank's
    for count in range(ring_plan.MAX_PLANS + 5):
        ring_plan.cached_schedule(2, 0, count)
    assert len(ring_plan._plans) == ring_plan.MAX_PLANS
    ring_plan.clear()
