"""Errors that only rank 0 can see (dp, hub) are raised on every rank, with the same
message, under a plain ``mpiexec python`` (without ``-m mpi4py``, nothing aborts the other
ranks: a verdict left on rank 0 would hang them, and the launch would time out).
tests/mpi/parallel_rank0_errors.py runs every case in one launch per N."""
import pytest

from mpi_util import run_mpi

SIZES = (2, 3)
NO_SAMPLES = "no rank saw any sample since the last step"
SCATTER = "dp with scatter_inputs=True: rank 0 must pass the global batch"
_cache = {}


def run_plain(n, script, timeout=60):
    """`script` on `n` ranks under mpiexec WITHOUT -m mpi4py; each rank's emitted object."""
    return run_mpi(n, script, timeout=timeout, mpi4py=False)


def results(n):
    if n not in _cache:
        _cache[n] = run_plain(n, "parallel_rank0_errors.py", timeout=30)
    return _cache[n]


def _same_on_every_rank(n, case):
    ranks = results(n)
    outcomes = [r[case] for r in ranks]
    assert all(o["then"] == n * (n - 1) // 2 for o in outcomes)  # and the ranks still talk
    messages = {o["message"] for o in outcomes}
    assert None not in messages, f"{case}: some rank did not raise: {outcomes}"
    return outcomes


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case, who", [("hub-no-samples", "hub"), ("hub-binomial-no-samples", "hub"),
                                       ("dp-no-samples", "dp"), ("dp-scatter-no-samples", "dp")])
def test_no_samples_raises_on_every_rank(n, case, who):
    outcomes = _same_on_every_rank(n, case)
    assert {o["message"] for o in outcomes} == {f"{who}: {NO_SAMPLES}; call model(x) with gradients "
                                                "enabled before backward() and step()"}
    assert {o["type"] for o in outcomes} == {"RuntimeError"}


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", ["dp-scatter-none", "dp-scatter-targets-none"])
def test_missing_global_batch_under_scatter_inputs_raises_on_every_rank(n, case):
    outcomes = _same_on_every_rank(n, case)
    messages = {o["message"] for o in outcomes}
    assert len(messages) == 1 and messages.pop().startswith(SCATTER)
    assert {o["type"] for o in outcomes} == {"ValueError"}


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case, needle", [("dp-root-targets-none", "rank 0 must pass the global targets"),
                                          ("dp-root-targets-too-many", "shards must follow np.array_split")])
def test_loss_on_root_errors_raise_on_every_rank(n, case, needle):
    outcomes = _same_on_every_rank(n, case)
    messages = {o["message"] for o in outcomes}
    assert len(messages) == 1
    message = messages.pop()
    assert message.startswith("dp loss_on_root: ") and needle in message
    assert {o["type"] for o in outcomes} == {"ValueError"}


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_a_failing_loss_on_root_reaches_every_rank(n):
    outcomes = _same_on_every_rank(n, "dp-root-loss-fails")
    root = outcomes[0]
    assert root["type"] == "ValueError" and root["message"].startswith("this loss refuses")
    for o in outcomes[1:]:
        assert o["message"] == f"dp loss_on_root: the loss failed on rank 0: ValueError: {root['message']}"


@pytest.mark.mpi
@pytest.mark.parametrize("n", (3,))
@pytest.mark.parametrize("strategy", ["hub", "dp"])
def test_an_empty_shard_is_not_an_error(n, strategy):
    ranks = results(n)
    rows = [r[f"{strategy}-empty-shard"]["rows"] for r in ranks]
    assert rows == [1, 1, 0]
    assert all(r[f"{strategy}-empty-shard"]["diff"] < 1e-12 for r in ranks)
