"""The second review's reproductions, fixed: two DDP models on one communicator, eval
forwards between steps, static_graph after a no_sync first step, dp scatter targets of
the wrong length. One launch of tests/mpi/parallel_fixes.py per N."""
import pytest

from minidist.parallel.buckets import TAG_BUCKET_SPAN, bucket_tag, instance_tag_base
from mpi_util import run_mpi

TAIL = 2  # the status tail: the sample count and the non-finite flag
SIZES = (2, 3)
_cache = {}


def results(n):
    if n not in _cache:
        _cache[n] = run_mpi(n, "parallel_fixes.py", timeout=60)
    return _cache[n]


def test_instance_tag_ranges_are_disjoint_and_fit_the_tag_upper_bound():
    mpich_ub = 2**31 - 1
    bases = [instance_tag_base(k, mpich_ub) for k in range(5)]
    assert bases[0] == 20_000 and len(set(bases)) == 5
    spans = sorted((b, b + TAG_BUCKET_SPAN - 1) for b in bases)
    assert all(hi < lo for (_, hi), (lo, _) in zip(spans, spans[1:]))  # no overlap
    assert all(not 30_000 <= b + i < 32_000 for b in bases for i in (0, TAG_BUCKET_SPAN - 1))
    # the standard's minimum TAG_UB (32767) fits one span: every instance wraps onto it
    assert {instance_tag_base(k, 32_767) for k in range(4)} == {20_000}
    # room for two spans above 40000: instances wrap after three
    assert [instance_tag_base(k, 59_999) for k in range(4)] == [20_000, 40_000, 50_000, 20_000]
    assert bucket_tag(3, 40_000) == 40_003 and bucket_tag(TAG_BUCKET_SPAN + 1, 40_000) == 40_001


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_two_ddp_models_stepped_interleaved_equal_their_local_references(n):
    for rank, r in enumerate(results(n)):
        c = r["two_models"]
        assert c["instances"][1] == c["instances"][0] + 1
        assert max(c["diffs"]) < 1e-10, f"rank {rank}: {c['diffs']}"


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("strategy", ("ddp", "hub", "dp"))
def test_eval_forwards_between_steps_are_not_training_samples(n, strategy):
    for rank, r in enumerate(results(n)):
        diffs = r["eval_between"][strategy]
        assert len(diffs) == 3
        assert max(diffs) < 1e-10, f"rank {rank}: {strategy} drifts from local by {diffs}"


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_static_graph_is_learnt_from_the_first_synchronised_backward(n):
    for rank, r in enumerate(results(n)):
        c = r["static_nosync_first"]
        assert c["graph_length"] == c["parameters"], f"rank {rank}: {c}"
        assert c["diff"] < 1e-10, f"rank {rank}: {c}"


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_dp_scatter_targets_of_the_wrong_length_raise_on_every_rank(n):
    ranks = results(n)
    assert all(r["dp_scatter_bad_y"]["raised"] for r in ranks)
    messages = {r["dp_scatter_bad_y"]["message"] for r in ranks}
    assert len(messages) == 1
    message = messages.pop()
    assert "11 target rows" in message and "10 input rows" in message


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("strategy", ("ddp", "hub", "dp"))
def test_find_unused_parameters_leaves_globally_unused_grads_none(n, strategy):
    from minidist.cost import message_counts
    for rank, r in enumerate(results(n)):
        c = r["unused_everywhere"][strategy]
        if strategy != "dp" or rank == 0:  # dp: only rank 0 steps (the others' grads are local)
            assert c["head_grad_is_none"], f"rank {rank}"
        assert c["diff"] < 1e-10, f"rank {rank}: momentum/weight decay moved the unused head: {c}"
        if strategy == "ddp":
            # one ring all-reduce of one int64 per parameter (4 parameters) at each of the 4 steps
            assert c["bitmap_messages"] == 4 * message_counts("ring_allreduce", n, rank, 4, 8)["messages_sent"]
        else:  # no extra message: the 4 flags ride on the gradients (30 float64 + 4 + the tail)
            assert c["bitmap_messages"] == 0
            phases = ({"grad-gather": "gather_to_root"} if strategy == "dp"
                      else {"grad-reduce": "reduce_to_root", "grad-broadcast": "broadcast"})
            for phase, collective in phases.items():
                one = message_counts(collective, n, rank, 30 + 4 + TAIL, 8)
                got = c["phases"][phase]
                assert got["messages_sent"] == 4 * one["messages_sent"], (rank, phase, got)
                assert got["bytes_sent"] == 4 * one["bytes_sent"], (rank, phase, got)
                assert got["bytes_received"] == 4 * one["bytes_received"], (rank, phase, got)


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("strategy", ("ddp", "hub", "dp"))
def test_without_find_unused_parameters_the_unused_head_gets_zero_grads(n, strategy):
    from minidist.cost import message_counts
    for rank, r in enumerate(results(n)):
        c = r["unused_everywhere_default"][strategy]  # the documented default: zeros, then updated
        if strategy != "dp" or rank == 0:
            assert not c["head_grad_is_none"]
        assert c["bitmap_messages"] == 0
        assert c["diff"] > 1e-6
        if strategy != "ddp":  # messages unchanged: the 30 float64 gradients (and the status tail)
            phase, collective = ("grad-gather", "gather_to_root") if strategy == "dp" \
                else ("grad-reduce", "reduce_to_root")
            one = message_counts(collective, n, rank, 30 + TAIL, 8)
            assert c["phases"][phase]["bytes_sent"] == 4 * one["bytes_sent"], (rank, c["phases"][phase])
