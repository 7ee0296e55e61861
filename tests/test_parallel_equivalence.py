"""Every strategy computes what local training on the global batch computes (float64, 1e-10),
replicas stay byte-identical, and each phase's ledger equals the closed-form counts.

One mpiexec launch per N (tests/mpi/parallel_equivalence.py runs every variant on an MLP
without normalisation, with LayerNorm and with SyncBatchNorm, whose reference is BatchNorm
on the global batch); the tests below assert on its results.
"""
import pytest

import numpy as np

from minidist.cost import message_counts
from minidist.parallel.tail import tail_length
from mpi.parallel_variants import VARIANTS
from mpi_util import run_mpi

SIZES = (1, 2, 3, 4)
NORMS = ("none", "layer", "sync")
HIDDEN, SYNCBN_LAYERS = 12, 2
_cache = {}


def results(n):
    if n not in _cache:
        _cache[n] = run_mpi(n, "parallel_equivalence.py", timeout=180)
    return _cache[n]


UNEVEN_EXACT = [v for v, (s, o) in VARIANTS.items() if o.get("average", "samples") == "samples"]


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("norm", NORMS)
def test_strategies_equal_local_training(n, norm):
    ranks = results(n)
    for name in UNEVEN_EXACT:
        for rank, r in enumerate(ranks):
            diffs = r["norms"][norm]["variants"][name]["diffs"]
            assert len(diffs) == 5
            assert max(diffs) < 1e-10, f"{name} rank {rank}: parameters drift from local by {max(diffs)}"


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_replicas_are_byte_identical(n):
    ranks = results(n)
    for norm in NORMS:
        for name in VARIANTS:
            digests = {r["norms"][norm]["variants"][name]["digest"] for r in ranks}
            assert len(digests) == 1, f"{name} ({norm}): replicas differ across ranks"


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_dividing_by_ranks_is_exact_only_for_even_shards(n):
    ranks = results(n)
    shards = ranks[0]["shard_sizes"]
    diff = max(ranks[0]["norms"]["none"]["variants"]["ddp-ranks-average"]["diffs"])
    if len(set(shards)) == 1:
        assert diff < 1e-10
    else:  # uneven shards: the plain mean over ranks is not the global-batch gradient
        assert diff > 1e-6


@pytest.mark.mpi
@pytest.mark.parametrize("n", (2, 3))
def test_only_the_dp_master_holds_optimizer_state(n):
    ranks = results(n)
    for name, (strategy, _) in VARIANTS.items():
        state = [r["norms"]["none"]["variants"][name]["optimizer_bytes"] for r in ranks]
        assert state[0] > 0
        if strategy == "dp":
            assert state[1:] == [0] * (n - 1), name
        else:
            assert state == [state[0]] * n, name


# ---- closed forms ------------------------------------------------------------------------------
KEYS = ("messages_sent", "messages_received", "bytes_sent", "bytes_received")


def _add(table, phase, counts):
    row = table.setdefault(phase, dict.fromkeys(KEYS, 0))
    for k in KEYS:
        row[k] += counts[k]


def expected_ledger(strategy, options, info, shapes, bucket_counts, n, r):
    B, sizes, out_features, in_features = info["batch"], info["shard_sizes"], info["out"], info["in"]
    mc, table = message_counts, {}
    n_params = shapes["n_params"]
    samples = options.get("average", "samples") == "samples"
    # the status tail: the sample count (not under loss_on_root) and the non-finite bitmap
    tail = tail_length(samples and not options.get("loss_on_root"), True)
    if shapes["int_buffers"]:  # SyncBatchNorm: [count, mean, M2] all-gathered forward, two sums backward
        for _ in range(SYNCBN_LAYERS):
            _add(table, "syncbn", mc("ring_allgather", n, r, n * (2 * HIDDEN + 1), 8))
            _add(table, "syncbn", mc("ring_allreduce", n, r, 2 * HIDDEN, 8))
        algorithm = options.get("broadcast", "linear") if strategy in ("dp", "hub") else "linear"
        _add(table, "buffer-broadcast", mc("broadcast", n, r, shapes["float_buffers"], 8, algorithm=algorithm))
        _add(table, "buffer-broadcast", mc("broadcast", n, r, shapes["int_buffers"], 8, algorithm=algorithm))
    if strategy == "dp":
        if options.get("scatter_inputs"):
            _add(table, "scatter", mc("scatter", n, r, B, 8 * in_features))  # inputs
            _add(table, "scatter", mc("scatter", n, r, B, 8))  # targets (int64)
        if options.get("loss_on_root"):
            row = 8 * out_features
            gather = ({"messages_sent": 0, "messages_received": n - 1, "bytes_sent": 0,
                       "bytes_received": (B - sizes[0]) * row} if r == 0 else
                      {"messages_sent": 1, "messages_received": 0, "bytes_sent": sizes[r] * row,
                       "bytes_received": 0})
            _add(table, "output-gather", gather)
            _add(table, "output-grad-scatter", mc("scatter", n, r, B, row))
        _add(table, "grad-gather", mc("gather_to_root", n, r, n_params + tail, 8))
        _add(table, "param-broadcast", mc("broadcast", n, r, n_params + tail, 8,
                                          algorithm=options.get("broadcast", "linear")))
    elif strategy == "hub":
        _add(table, "grad-reduce", mc("reduce_to_root", n, r, n_params + tail, 8,
                                      algorithm=options.get("reduce", "linear")))
        _add(table, "grad-broadcast", mc("broadcast", n, r, n_params + tail, 8,
                                         algorithm=options.get("broadcast", "linear")))
    elif strategy == "ddp":
        assert sum(bucket_counts) == n_params
        for i, count in enumerate(bucket_counts):  # the tail rides in the last bucket
            _add(table, "grad-allreduce", mc("allreduce", n, r, count + tail * (i == len(bucket_counts) - 1), 8,
                                             algorithm=options.get("algorithm", "ring")))
    return {phase: row for phase, row in table.items() if any(row.values())}


@pytest.mark.mpi
@pytest.mark.parametrize("n", SIZES)
def test_ledger_matches_closed_forms_for_every_phase(n):
    ranks = results(n)
    for norm in NORMS:
        for name, (strategy, options) in VARIANTS.items():
            for rank, r in enumerate(ranks):
                info, v = r, r["norms"][norm]["variants"][name]
                expected = expected_ledger(strategy, options, info, r["norms"][norm],
                                           v.get("bucket_counts", []), n, rank)
                measured = {phase: {k: row[k] for k in KEYS} for phase, row in v["ledger"].items()
                            if any(row[k] for k in KEYS)}
                assert measured == expected, f"{name} ({norm}) rank {rank}"


@pytest.mark.mpi
def test_tiny_buckets_split_and_large_buckets_do_not():
    r = results(2)[0]["norms"]["none"]["variants"]
    assert len(r["ddp-tiny-overlap"]["bucket_counts"]) > 2
    assert len(r["ddp-large"]["bucket_counts"]) == 1
