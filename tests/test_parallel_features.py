"""SyncBatchNorm equals BatchNorm on the global batch (and plain BatchNorm under DDP does
not), even far from zero, and syncs only in training; no_sync accumulation; DDP overlap
order (static_graph and default); unused parameters; the drift check; the fp16 hook;
memory accounting. One launch of tests/mpi/parallel_features.py per N."""
import numpy as np
import pytest

from minidist.cost import message_counts
from minidist.cost.counts import scratch_bytes
from minidist.cost import syncbn_message_counts
from minidist.parallel.tail import tail_length
from mpi_util import run_mpi

SIZES = (2, 3, 4)
HIDDEN = 12
_cache = {}


def results(n):
    if n not in _cache:
        _cache[n] = run_mpi(n, "parallel_features.py", timeout=180)
    return _cache[n]


def _sum_counts(*counts):
    keys = ("messages_sent", "messages_received", "bytes_sent", "bytes_received")
    return {k: sum(c[k] for c in counts) for k in keys}


def _phase(ledger, phase):
    keys = ("messages_sent", "messages_received", "bytes_sent", "bytes_received")
    return {k: ledger.get(phase, {}).get(k, 0) for k in keys}


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_syncbn_under_ddp_equals_batchnorm_on_the_global_batch(n):
    for rank, r in enumerate(results(n)):
        s = r["syncbn"]
        for key in ("output", "grads", "running", "params"):
            assert max(s[key]) < 1e-10, f"rank {rank}: SyncBatchNorm {key} differs by {max(s[key])}"
        assert s["num_batches_tracked"] == [5, 5]


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_syncbn_ledger_matches_closed_forms(n):
    for rank, r in enumerate(results(n)):
        ledger = r["syncbn"]["ledger"]
        # forward: [count, mean, M2] (2C+1 float64) all-gathered; backward: 2C all-reduced
        per_layer = [message_counts("ring_allgather", n, rank, n * (2 * HIDDEN + 1), 8),
                     message_counts("ring_allreduce", n, rank, 2 * HIDDEN, 8)]
        assert _phase(ledger, "syncbn") == _sum_counts(*per_layer, *per_layer)  # two layers
        assert syncbn_message_counts(HIDDEN, n, rank) == _sum_counts(*per_layer)
        buffers = [message_counts("broadcast", n, rank, 2 * 2 * HIDDEN, 8),  # running mean/var
                   message_counts("broadcast", n, rank, 2, 8)]  # num_batches_tracked, int64
        assert _phase(ledger, "buffer-broadcast") == _sum_counts(*buffers)


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_converted_cnn_matches_local_batchnorm(n):
    for r in results(n):
        c = r["syncbn_cnn"]
        assert c["converted"] == ["SyncBatchNorm", "SyncBatchNorm"]
        assert c["same_parameter_object"]
        assert c["params"] < 1e-10 and c["running"] < 1e-10


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_plain_batchnorm_under_ddp_differs_from_global_batchnorm(n):
    for r in results(n):
        p = r["plain_bn"]
        assert max(p["output"]) > 1e-6  # each rank normalises with its own shard's statistics
        assert max(p["params"]) > 1e-6
        assert max(p["running"]) > 1e-6


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_no_sync_accumulation_equals_one_large_batch_step(n):
    for r in results(n):
        ns = r["no_sync"]
        assert max(ns["diffs"]) < 1e-10
        per_step = 2 * (n - 1) * ns["buckets"]
        assert ns["messages"] == [0, per_step] * 3  # nothing inside no_sync, one all-reduce after


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_static_graph_overlap_finishes_buckets_before_backward_ends(n):
    """static_graph=True, second iteration: the bounded wait makes bucket 0 finish once
    2(N-1) more buckets have launched, while backward still runs."""
    for r in results(n):
        events = [tuple(e) for e in r["overlap_static"]["events"]]
        last = r["overlap_static"]["buckets"] - 1
        assert last + 1 >= 2 * n + 1, "the test model needs more buckets than ring steps (+3)"
        assert events.index(("done", 0)) < events.index(("ready", last)) < events.index(("backward_done", None))
        end = events.index(("backward_done", None))
        assert sum(kind == "launch" for kind, _ in events[:end]) == last + 1  # all during backward


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_default_overlap_launches_every_bucket_during_backward(n):
    """Default mode never waits during backward, so when buckets finish is up to the
    messages; what is deterministic: each bucket launches as soon as it and the ones before
    it are ready, all before backward ends, and every one is done by the end of step()."""
    for r in results(n):
        events = [tuple(e) for e in r["overlap"]["events"]]
        buckets = r["overlap"]["buckets"]
        end = events.index(("backward_done", None))
        launches = [b for kind, b in events[:end] if kind == "launch"]
        assert launches == list(range(buckets))
        for b in range(buckets):
            assert events.index(("ready", b)) < events.index(("launch", b)) < end
        assert sorted(b for kind, b in events if kind == "done") == list(range(buckets))


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_ddp_without_overlap_communicates_after_backward(n):
    for r in results(n):
        events = [tuple(e) for e in r["no_overlap"]["events"]]
        end = events.index(("backward_done", None))
        assert all(kind == "ready" for kind, _ in events[:end])
        assert sum(kind == "done" for kind, _ in events[end:]) == r["no_overlap"]["buckets"]


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_unused_parameters_do_not_hang_and_get_averaged_zeros(n):
    ranks = results(n)
    expected = ranks[0]["unused"]["rank0_expected"]
    for r in ranks:
        u = r["unused"]
        assert u["never_grad_max"] == 0.0 and u["never_weight_unchanged"]
        assert u["rank0_only_grad"] == ranks[0]["unused"]["rank0_only_grad"]
        assert max(abs(a - b) for a, b in zip(u["rank0_only_grad"], expected)) < 1e-12


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_drift_check_trips_on_every_rank_when_a_replica_is_perturbed(n):
    for r in results(n):
        d = r["drift"]
        assert d["raised"] and d["step"] == 3 and d["ranks"] == [n - 1] and d["checked_ok"] == 2
        assert f"rank(s) [{n - 1}]" in d["message"]


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_fp16_hook_halves_the_bytes_within_fp16_rounding(n):
    for rank, r in enumerate(results(n)):
        f = r["fp16"]
        assert 0 < f["max_diff"] <= 4e-3 * f["max_grad"]
        expected16 = _sum_counts(*[message_counts("ring_allreduce", n, rank, c, 2) for c in f["bucket_counts"]])
        expected64 = _sum_counts(*[message_counts("ring_allreduce", n, rank, c, 8) for c in f["bucket_counts"]])
        assert _phase({"p": f["ledger"]["fp16"]}, "p") == expected16
        assert _phase({"p": f["ledger"]["None"]}, "p") == expected64


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_ddp_buckets_equal_the_blocking_ring_bit_for_bit(n):
    """DDP's overlapped non-blocking rings (float64, and float16 under the fp16 hook) give
    the bytes of minidist.comm.ring_allreduce on the same scaled buckets."""
    for rank, r in enumerate(results(n)):
        for hook, v in r["vs_blocking_ring"].items():
            assert v["buckets"] >= 2 * n and len(v["same"]) == v["buckets"], (rank, hook)
            assert all(v["same"]), (rank, hook, v["same"])


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_memory_shows_the_dp_master_and_replicated_adam_state(n):
    ranks = results(n)
    mem = [r["memory"] for r in ranks]
    params = mem[0]["ddp"]["parameters"]
    assert mem[0]["dp"]["optimizer"] == 2 * params  # Adam's two moments, on the master only
    assert all(m["dp"]["optimizer"] == 0 for m in mem[1:])
    for strategy in ("hub", "ddp"):
        assert all(m[strategy]["optimizer"] == 2 * params for m in mem)
    tail = 8 * tail_length(True, True)  # the status tail (sample count, non-finite flag)
    assert all(m["ddp"]["comm_buffers"] == params + tail for m in mem)  # the bucket buffers
    assert mem[0]["dp"]["comm_buffers"] == n * (params + tail)  # every rank's gradients at once
    assert all(m["dp"]["comm_buffers"] == params + tail for m in mem[1:])
    for m in mem:
        for report in m.values():
            assert report["total"] == sum(report[k] for k in ("parameters", "gradients", "optimizer",
                                                              "comm_buffers"))
            assert report["peak"] >= report["total"] + report["comm_peak"]


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_comm_peak_counts_scratch_held_during_backward(n):
    """One parameter per bucket, bucket 0 ready last: with overlap, every ring starts at the
    last hook and all are in flight at once, as they are without overlap in step(); both
    report that sum (counts.scratch_bytes: one longest chunk per ring), at every step."""
    for rank, r in enumerate(results(n)):
        peaks = r["memory_peaks"]
        counts = peaks["overlap=True"]["bucket_counts"]
        assert len(counts) > 2 * n  # bucket 0 would finish before backward ends if it were waited on
        expected = sum(scratch_bytes("ring_allreduce", n, rank, c, 8) for c in counts)
        assert peaks["overlap=True"]["peaks"] == [expected, expected] == peaks["overlap=False"]["peaks"]


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_comm_peak_counts_syncbatchnorm_all_reduce_in_backward(n):
    for rank, r in enumerate(results(n)):
        s = r["memory_peaks"]["syncbn"]
        bucket = sum(scratch_bytes("ring_allreduce", n, rank, c, 8) for c in s["bucket_counts"])
        syncbn = scratch_bytes("ring_allreduce", n, rank, 2 * s["channels"], 8)
        assert syncbn > bucket
        assert s["peaks"] == [syncbn, syncbn]


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_syncbn_keeps_its_precision_far_from_zero(n):
    """Mean 1000, std 0.01: E[x^2] - E[x]^2 in float64 loses five digits of the variance;
    the per-rank (count, mean, M2) combination keeps BatchNorm's answer to 1e-9."""
    for r in results(n):
        s = r["syncbn_precision"]
        assert s["output"] < 1e-9 and s["running_var"] < 1e-9 and s["running_mean"] < 1e-12


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_syncbn_in_eval_without_running_stats_uses_local_batch_stats(n):
    """As torch.nn.SyncBatchNorm: no sync in eval mode; with track_running_stats=False
    each rank normalises with its own shard's statistics."""
    for r in results(n):
        s = r["syncbn_precision"]
        assert s["eval_messages"] == 0
        assert s["eval_vs_local_batch_stats"] < 1e-12
