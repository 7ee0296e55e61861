"""DDP never hangs when ranks produce different gradients (a head used on some ranks only,
with and without a SyncBatchNorm in the model, the review's reproductions) and still
averages exactly; static_graph=True refuses such a model on every rank, naming the
parameters and the ranks. One launch of tests/mpi/parallel_unused.py per N."""
import pytest

from mpi_util import run_mpi

SIZES = (2, 3, 5)
CASES = ("chain-rank0", "chain-rank0-no-overlap", "chain-not1", "syncbn-rank0",
         "syncbn-rank0-no-overlap", "syncbn-not1-recursive-doubling")
_cache = {}


def results(n):
    if n not in _cache:
        _cache[n] = run_mpi(n, "parallel_unused.py", timeout=60)
    return _cache[n]


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", CASES)
def test_gradients_used_on_some_ranks_only_are_averaged_without_hanging(n, case):
    for rank, r in enumerate(results(n)):
        c = r[case]
        assert c["buckets"] >= 6  # one parameter per bucket, the head's first
        assert len(c["diffs"]) == 2
        assert max(c["diffs"]) < 1e-12, f"rank {rank}: gradients differ from the global batch's by {c['diffs']}"


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_static_graph_mismatch_raises_the_same_error_on_every_rank(n):
    ranks = results(n)
    messages = {r["static_graph_mismatch"].get("message") for r in ranks}
    assert all(r["static_graph_mismatch"]["raised"] for r in ranks)
    assert len(messages) == 1
    message = messages.pop()
    assert "static_graph" in message
    others = list(range(1, n))
    for name in ("'aux.weight'", "'aux.bias'"):
        assert name in message
    assert "rank(s) [0]" in message and f"rank(s) {others}: no gradient" in message
    assert "'body.0.weight'" in message  # its position moved too: the head's gradients came first
