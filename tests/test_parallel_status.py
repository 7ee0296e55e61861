"""The step's status rides in the gradient messages (minidist.parallel.tail): no collective
runs just for the sample count, and a NaN on one rank's batch is caught on every rank.
tests/mpi/parallel_status.py runs every case in one plain mpiexec launch per N."""
import numpy as np
import pytest

from minidist.cost import message_counts
from minidist.cost.stepcost import dense, predict_step
from minidist.parallel.tail import StatusTail, tail_length
from mpi_util import run_mpi

SIZES = (2, 3)
_cache = {}


def results(n):
    if n not in _cache:
        _cache[n] = run_mpi(n, "parallel_status.py", timeout=120, mpi4py=False)
    return _cache[n]


def _sync_only(strategy, n, rank, n_params):
    """The gradient synchronisation (and dp/hub's broadcast back), nothing else: every
    message is the model's float64 gradients (or parameters) plus the status tail."""
    width = n_params + tail_length(True, True)
    phases = {"dp": (("grad-gather", "gather_to_root"), ("param-broadcast", "broadcast")),
              "hub": (("grad-reduce", "reduce_to_root"), ("grad-broadcast", "broadcast")),
              "ddp": (("grad-allreduce", "ring_allreduce"),)}[strategy]
    return {phase: message_counts(collective, n, rank, width, 8) for phase, collective in phases}


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("strategy", ("dp", "hub", "ddp"))
def test_a_steady_step_sends_only_the_gradient_synchronisation(n, strategy):
    for rank, r in enumerate(results(n)):
        case = r[strategy]
        assert case["buffers"] == 0
        assert case["steady"] == _sync_only(strategy, n, rank, case["n_params"]), rank
        if rank <= 1:  # stepcost predicts rank 0 and rank 1
            assert case["predicted"] == case["steady"], rank  # the closed forms, exactly


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("strategy", ("dp", "hub", "ddp"))
def test_a_nan_on_one_rank_raises_on_every_rank_naming_it_and_the_step(n, strategy):
    outcomes = [r[strategy] for r in results(n)]
    assert all(o["then"] == n * (n - 1) // 2 for o in outcomes)  # no rank left waiting
    raised = {(o["raised"] or {}).get("message") for o in outcomes}
    assert len(raised) == 1 and None not in raised, outcomes
    message = raised.pop()
    assert f"rank(s) [{n - 1}]" in message and "at step 2" in message and "nonfinite='skip'" in message
    assert {o["raised"]["type"] for o in outcomes} == {"NonFiniteGradientError"}


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("strategy", ("dp", "hub", "ddp"))
def test_skip_leaves_the_parameters_unchanged_and_equal_on_every_rank(n, strategy):
    skips = [r[strategy]["skip"] for r in results(n)]
    assert all(s["unchanged"] and s["moved_after"] and s["finite"] for s in skips), skips
    assert all(s["skipped"] == 1 and s["steps"] == 3 for s in skips)
    assert len({s["digest"] for s in skips}) == 1


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_summed_tail_gives_the_total_and_how_many_ranks_failed(dtype):
    tail = StatusTail(counts=True, flags=True)
    summed = np.zeros(tail.length, dtype)
    for rank, (samples, finite) in enumerate([(3, True), (4, False), (0, True), (5, False)]):
        mine = np.zeros(tail.length, dtype)
        tail.encode(mine, samples, 0 if finite else 1)
        summed += mine
    assert tail.read(summed) == (12.0, 2) and tail.length == 2 == tail_length(True, True)
    assert StatusTail(counts=False, flags=False).length == 0


@pytest.mark.parametrize("n", [2, 4, 16, 64])
def test_dp_and_hub_are_predicted_the_same_communication_time(n):
    """Same bytes, same additions (dp's sum on rank 0 is charged as hub's reduction): the
    issue asks for 10 %; they are equal to round-off."""
    shape = dense(10_000_000, n_tensors=8)
    for profile in ("shm", "ib-hdr"):
        dp, hub = (predict_step(s, n, shape, profile=profile)["seconds"] for s in ("dp", "hub"))
        assert dp == pytest.approx(hub, rel=1e-12), (profile, dp, hub)


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_dp_sums_in_place_in_persistent_rows_exactly_as_hub_reduces(n):
    """dp gathers into the same rows every step and adds them in rank order, as hub's linear
    reduce does: same bytes on the wire (above), and bit-for-bit the same training."""
    for r in results(n):
        addresses = r["dp"]["row_addresses"]
        assert len(addresses) == 2 and addresses[0] == addresses[1]
        assert r["dp"]["digest"] == r["hub"]["digest"]
