"""The common clock and the wait/transfer split (minidist.comm.clock, minidist.comm.timeline)."""
import pytest

from mpi_util import run_mpi

SLEEP = 0.2


@pytest.fixture(scope="module", params=[2, 3, 4])
def results(request):
    return run_mpi(request.param, "timing_clock.py", str(SLEEP), timeout=180)


@pytest.mark.mpi
def test_offsets_are_within_the_stated_bound(results):
    for rank, r in enumerate(results):
        assert abs(r["offset"] - r["true_offset"]) <= r["bound"] + 1e-9, (rank, r)
        assert r["bound"] < 0.05  # a round trip on one machine: well under 100 ms, even loaded
    assert results[0]["bound"] == 0.0


@pytest.mark.mpi
def test_wait_plus_transfer_is_each_calls_time_and_the_ledger_sums_the_waits(results):
    for r in results:
        assert [c["name"] for c in r["calls"]] == ["ring_allreduce", "gather_to_root", "ring_allreduce",
                                                   "broadcast", "ring_allreduce bucket"]
        for c in r["calls"]:
            assert c["wait"] + c["transfer"] == pytest.approx(c["duration"], abs=1e-12)
            assert 0.0 <= c["wait"] <= c["duration"] + 1e-12
        for phase in ("warm", "late", "bucket"):
            waits = sum(c["wait"] for c in r["calls"] if c["phase"] == phase)
            assert r["ledger_wait"][phase] == pytest.approx(waits, abs=1e-12)


@pytest.mark.mpi
def test_a_late_rank_makes_the_others_wait_about_that_long(results):
    late = [next(c for c in r["calls"] if c["phase"] == "late") for r in results]
    bound = max(r["bound"] for r in results)
    for rank, call in enumerate(late):
        if rank == 1:
            assert call["wait"] < 0.5 * SLEEP, call  # the sleeper came last: it hardly waits
        else:  # the others entered before rank 1 slept (give or take the warm-up skew)
            assert SLEEP - 0.08 - 2 * bound <= call["wait"] <= SLEEP + 0.15, (rank, call)
    entered = [c["enter"] for c in late]
    assert max(entered) == pytest.approx(entered[1], abs=2 * bound + 1e-9)


@pytest.mark.mpi
def test_ring_steps_nest_in_their_bucket_span_with_bytes_and_peers(results):
    n = len(results)
    for rank, r in enumerate(results):
        bucket = next(e for e in r["events"] if e[0] == "ring_allreduce bucket")
        steps = [e for e in r["events"] if e[1] == "ring"]
        assert len(steps) == 2 * (n - 1)
        for name, _cat, start, end, args in steps:
            assert bucket[2] <= start <= end <= bucket[3], (name, bucket)
            assert args["to"] == (rank + 1) % n and args["from"] == (rank - 1) % n
            assert args["bytes_sent"] > 0 and args["bytes_received"] > 0


class _FakeWorld:
    """Stands in for the MPI communicator in `settle`: the other rank's enter times are given."""

    def __init__(self, other):
        self.other = other

    def Get_size(self):
        return 2

    def allgather(self, mine):
        return [mine, self.other]


def _timeline(times):
    from minidist.comm.clock import ClockSync
    from minidist.comm.timeline import Timeline

    clock = iter(times)
    return Timeline(ClockSync(0.5, 0.0, (0.0, 0.5), (0.0, 0.0), 1, lambda: next(clock)), rank=1)


def test_settle_splits_blocking_and_non_blocking_calls_on_the_common_clock():
    from minidist.comm.ledger import Ledger

    # local clock = common + 0.5; a blocking call entered at common 1.0, left at 3.0; a
    # non-blocking ring from 4.0 to 9.0, inside its calls during [4, 4.5], [6, 7], [8, 9]
    tl = _timeline([1.5, 3.5, 4.5])
    call = tl.begin("broadcast", "p")
    tl.end(call)
    ring = tl.begin("ring_allreduce bucket", "q", tag=7, blocking=False)
    ring.inside += [(4.5, 5.0), (6.5, 7.5), (8.5, 9.5)]
    ring.exit = 9.5
    ledger = Ledger()
    other = {call.key: 2.5, ring.key: 6.5}  # the other rank entered at common 2.5 and 6.5
    calls = tl.settle(_FakeWorld(other), ledger)
    assert [c.wait for c in calls] == [pytest.approx(1.5), pytest.approx(0.5 + 0.5)]
    assert [c.duration for c in calls] == [pytest.approx(2.0), pytest.approx(2.5)]
    assert all(c.wait + c.transfer == pytest.approx(c.duration) for c in calls)
    assert ledger.totals("p")["wait_seconds"] == pytest.approx(1.5)
    assert ledger.totals()["wait_seconds"] == pytest.approx(2.5)
    waits = [(s, e) for name, _cat, s, e, _a in tl.events if name == "wait"]
    assert waits == [(pytest.approx(1.0), pytest.approx(2.5)), (pytest.approx(4.0), pytest.approx(4.5)),
                     (pytest.approx(6.0), pytest.approx(6.5))]


def test_settle_refuses_open_calls():
    tl = _timeline([1.0])
    tl.begin("broadcast", "p")
    with pytest.raises(RuntimeError, match="still open"):
        tl.settle(_FakeWorld({}))
