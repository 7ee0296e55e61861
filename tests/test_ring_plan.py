"""The ring all-reduce's cached per-call setup (minidist/comm/ring_plan.py): results stay
exact when the same arrays come again, when new ones do, and past the cache's size."""
import pytest

from minidist.comm import ring_plan
from minidist.comm.ring import ring_schedule, schedule
from mpi_util import run_mpi


@pytest.mark.mpi
@pytest.mark.parametrize("n", [2, 3])
def test_repeated_ring_allreduces_stay_exact(n):
    for r in run_mpi(n, "ring_plan_reuse.py", timeout=180):
        assert r["ok"] and r["calls"] > 40 and 0 < r["plans"] <= r["max"]


def test_the_same_request_gets_the_same_schedule_and_the_cache_is_bounded():
    ring_plan.clear()
    first = schedule(3, 1, 10)
    assert first == list(ring_schedule(3, 1, 10)) and schedule(3, 1, 10) is first
    assert schedule(3, 2, 10) == list(ring_schedule(3, 2, 10))  # another rank's
    for count in range(ring_plan.MAX_PLANS + 5):
        schedule(2, 0, count)
    assert len(ring_plan._plans) == ring_plan.MAX_PLANS
    ring_plan.clear()


def test_the_cache_drops_the_least_recently_used():
    ring_plan.clear()
    kept = schedule(5, 0, 7)
    for count in range(2 * ring_plan.MAX_PLANS):  # `kept` is used between every new entry
        schedule(2, 0, count)
        assert schedule(5, 0, 7) is kept
    ring_plan.clear()
