"""The labs (labs/*.py): each runs once with --quick under mpiexec (2 or 3 ranks) and the
numbers it writes with --json are checked against what the claim and the closed forms say,
derived here independently of the lab's own code. Their conclusions are checked to follow
the numbers: fed contradicting numbers, they must say the claim does not hold."""
import json
import sys

import numpy as np
import pytest

from mpi_util import ROOT, check, launch

LABS = ROOT / "labs"
sys.path.insert(0, str(LABS))  # the labs import their shared `common` module


def run_lab(tmp_path_factory, script: str, n: int, *args: str) -> dict:
    out = tmp_path_factory.mktemp(script.replace(".py", "")) / "result.json"
    proc = check(launch(n, LABS / script, "--quick", "--json", out, *args, timeout=90))
    result = json.loads(out.read_text())
    assert result["conclusion"] in proc.stdout  # the printed conclusion is the one in the JSON
    return result


def ring_sent(count: int, size: int, rank: int) -> int:
    """Elements rank `rank` sends in a ring all-reduce of `count` elements: every chunk of
    np.array_split but its own (reduce-scatter) and but the next rank's (all-gather)."""
    chunks = [len(c) for c in np.array_split(np.empty(count), size)]
    return 2 * count - chunks[rank] - chunks[(rank + 1) % size]


def ring_received(count: int, size: int, rank: int) -> int:
    chunks = [len(c) for c in np.array_split(np.empty(count), size)]
    return 2 * count - chunks[(rank - 1) % size] - chunks[rank]


def mlp_parameters(hidden: int, inputs: int = 2, classes: int = 3) -> int:
    """Elements of MLP(inputs, hidden, classes, depth=2) without norm layers."""
    return (inputs * hidden + hidden) + (hidden * hidden + hidden) + (hidden * classes + classes)


# ---- lab 1: BatchNorm vs LayerNorm ------------------------------------------------------------
@pytest.fixture(scope="module")
def norm_lab(tmp_path_factory):
    return run_lab(tmp_path_factory, "batchnorm_vs_layernorm.py", 2)


@pytest.mark.mpi
def test_batchnorm_drifts_under_ddp_and_syncbn_layernorm_do_not(norm_lab):
    drift = {r["norm"]: r for r in norm_lab["drift"]}
    assert norm_lab["world_size"] == 2
    assert drift["batch"]["max_param_diff"] > 1e-6
    assert drift["sync"]["max_param_diff"] < 1e-9
    assert drift["layer"]["max_param_diff"] < 1e-9
    for norm in ("sync", "layer"):  # the same parameters classify the held-out set the same way
        assert drift[norm]["accuracy"] == pytest.approx(drift[norm]["reference_accuracy"], abs=0.01)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in norm_lab["drift"])


@pytest.mark.mpi
def test_per_sample_dependence(norm_lab):
    s = {r["norm"]: r for r in norm_lab["per_sample"]}
    assert s["batch"]["same_shard_train"] > 1e-6 and s["sync"]["same_shard_train"] > 1e-6
    assert s["layer"]["same_shard_train"] < 1e-12
    # another rank's sample: invisible to per-shard BatchNorm, visible to SyncBatchNorm
    assert s["batch"]["other_rank_train"] < 1e-12 and s["layer"]["other_rank_train"] < 1e-12
    assert s["sync"]["other_rank_train"] > 1e-6
    assert all(r["same_shard_eval"] < 1e-12 for r in norm_lab["per_sample"])  # running statistics
    assert norm_lab["holds"] is True and "claim holds" in norm_lab["conclusion"]


def test_norm_lab_conclusion_follows_the_numbers(norm_lab):
    lab = __import__("batchnorm_vs_layernorm")
    drift = [dict(r) for r in norm_lab["drift"]]
    verdict, text = lab.conclude(drift, norm_lab["per_sample"], 2)
    assert verdict["holds"] and "claim holds" in text
    for r in drift:
        if r["norm"] == "sync":
            r["max_param_diff"] = 1e-3  # as if SyncBatchNorm had drifted
    verdict, text = lab.conclude(drift, norm_lab["per_sample"], 2)
    assert not verdict["holds"] and "does NOT hold" in text and "SyncBatchNorm does not drift" in text


def test_norm_lab_on_one_process(tmp_path, capsys):
    """One rank: the shard is the global batch, so nothing drifts, and the per-sample
    check still separates BatchNorm from LayerNorm."""
    lab = __import__("batchnorm_vs_layernorm")
    lab.main(["--quick", "--json", str(tmp_path / "one.json")])
    result = json.loads((tmp_path / "one.json").read_text())
    assert result["world_size"] == 1 and result["conclusion"] in capsys.readouterr().out
    assert all(r["max_param_diff"] < 1e-9 for r in result["drift"])
    s = {r["norm"]: r for r in result["per_sample"]}
    assert s["batch"]["same_shard_train"] > 1e-6 and s["layer"]["same_shard_train"] < 1e-12
    assert s["batch"]["other_rank_train"] is None  # there is no other rank
    assert result["holds"] is True


# ---- lab 2: tiny per-rank batches --------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory):
    return run_lab(tmp_path_factory, "batchnorm_tiny_batches.py", 3)


@pytest.mark.mpi
def test_syncbn_traffic_is_the_closed_form(tiny_lab):
    n, hidden = tiny_lab["world_size"], tiny_lab["config"]["hidden"]
    assert n == 3
    # per SyncBatchNorm layer (two in the MLP, `hidden` channels): forward all-gathers each
    # rank's [count, mean, M2] = 2C+1 float64 (N-1 ring steps of one rank's share), backward
    # all-reduces [sum dy, sum dy*(x-mean)] = 2C
    per_layer = (n - 1) * (2 * hidden + 1) + ring_sent(2 * hidden, n, 0)
    expected_bytes, expected_messages = 2 * per_layer * 8, 2 * 3 * (n - 1)
    sync = [r for r in tiny_lab["rows"] if r["norm"] == "sync"]
    assert [r["batch"] for r in sync] == tiny_lab["config"]["batches"] and len(sync) >= 2
    for r in sync:  # the same whatever the batch size
        assert r["syncbn_bytes_sent"] == expected_bytes == r["syncbn_bytes_closed_form"]
        assert r["syncbn_messages_sent"] == expected_messages == r["syncbn_messages_closed_form"]
    for r in tiny_lab["rows"]:
        if r["norm"] in ("batch", "layer"):
            assert r["syncbn_bytes_sent"] == 0 and r["syncbn_messages_sent"] == 0


@pytest.mark.mpi
def test_syncbn_equals_batchnorm_on_the_global_batch(tiny_lab):
    rows = tiny_lab["rows"]
    for b in tiny_lab["config"]["batches"]:
        at = {r["norm"]: r for r in rows if r["batch"] == b}
        assert at["sync"]["max_param_diff"] < 1e-9
        assert at["batch"]["max_param_diff"] > 1e-6
        assert at["sync"]["accuracy"] == pytest.approx(at["batch-global"]["accuracy"], abs=0.01)
        assert at["batch-global"]["global_batch"] == 3 * b
        # gradients: one float64 all-reduce of the parameters, the same for every norm
        assert at["batch"]["grad_allreduce_bytes_sent"] == at["sync"]["grad_allreduce_bytes_sent"] > 0
    checks = tiny_lab["checks"]
    assert checks["SyncBatchNorm trains exactly as BatchNorm on the global batch"]
    assert checks["SyncBatchNorm's traffic is the closed form"]


def test_tiny_lab_conclusion_follows_the_numbers(tiny_lab):
    lab = __import__("batchnorm_tiny_batches")
    rows = [dict(r) for r in tiny_lab["rows"] if r["norm"] in ("batch", "sync", "layer")]
    small, large = min(tiny_lab["config"]["batches"]), max(tiny_lab["config"]["batches"])
    for r in rows:  # numbers for which the claim holds, whatever a 3-step run gave
        r["accuracy"] = {"batch": 0.4 if r["batch"] == small else 0.9, "sync": 0.8, "layer": 0.8}[r["norm"]]
    verdict, text = lab.conclude(rows, tiny_lab["config"]["batches"], 3)
    assert verdict["holds"], verdict
    for r in rows:
        if r["norm"] == "batch" and r["batch"] == small:
            r["accuracy"] = 0.95  # BatchNorm at the tiny batch beats SyncBatchNorm: the claim fails
    verdict, text = lab.conclude(rows, [small, large], 3)
    assert not verdict["holds"] and f"BatchNorm at b={small} is less accurate" in text


# ---- lab 3: rank 0 as the bottleneck -------------------------------------------------------------
@pytest.fixture(scope="module")
def rank0_lab(tmp_path_factory):
    return run_lab(tmp_path_factory, "dp_rank0_bottleneck.py", 3)


@pytest.mark.mpi
def test_dp_and_hub_rank0_moves_n_minus_1_times_the_others(rank0_lab):
    P = mlp_parameters(rank0_lab["config"]["hidden"]) * 4  # float32
    assert rank0_lab["parameter_bytes"] == P and rank0_lab["sizes"] == [2, 3]
    rows = {(r["strategy"], r["size"]): r for r in rank0_lab["measured"]}
    for strategy in ("dp", "hub"):
        for n in (2, 3):
            r = rows[strategy, n]
            # non-root: its gradient out, the parameters (dp) or the averaged gradient (hub)
            # in, each with the 8-byte status tail (sample count, non-finite flag); rank 0
            # the mirror image, N-1 times
            assert r["rank1_bytes"] == 2 * (P + 8)
            assert r["rank0_bytes"] == (n - 1) * 2 * (P + 8) == (n - 1) * r["other_bytes_max"]
            assert r["rank0_messages"] == 2 * (n - 1) and r["rank1_messages"] == 2
    assert rows["dp", 3]["rank0_peak"] > rows["dp", 2]["rank0_peak"]  # N gradients held at once
    assert rows["dp", 3]["rank0_peak"] - rows["dp", 2]["rank0_peak"] == P + 8  # one more of them
    for n in (2, 3):
        assert rows["dp", n]["rank0_peak"] == rows["dp", n]["predicted_rank0_peak"]


@pytest.mark.mpi
def test_ddp_spreads_the_traffic_evenly(rank0_lab):
    count = mlp_parameters(rank0_lab["config"]["hidden"]) + 2  # one float32 bucket + the status tail
    for r in rank0_lab["measured"]:
        if r["strategy"] != "ddp":
            continue
        n = r["size"]
        for rank, key in ((0, "rank0_bytes"), (1, "rank1_bytes")):
            assert r[key] == 4 * (ring_sent(count, n, rank) + ring_received(count, n, rank))
        assert r["rank0_messages"] == 2 * 2 * (n - 1)
        assert r["rank0_bytes"] / r["model_bytes"] < 2 * 2 * (n - 1) / n + 0.01


@pytest.mark.mpi
def test_projection_and_measurement_agree_with_stepcost(rank0_lab):
    for r in rank0_lab["measured"]:
        assert r["rank0_bytes"] == r["predicted_rank0_bytes"]
        assert r["rank1_bytes"] == r["predicted_rank1_bytes"]
    projection = rank0_lab["projection"]
    assert [p["size"] for p in projection] == rank0_lab["config"]["project"]
    for p in projection:
        n = p["size"]
        assert p["dp_rank0_out"] == pytest.approx(n - 1, rel=0.01)  # the parameters (+ the status tail) to every other rank
        assert p["dp_other_out"] == pytest.approx(1.0, abs=0.01)
        assert p["hub_rank0_in"] == pytest.approx(n - 1, rel=0.01)
        assert p["ddp_rank0_out"] == pytest.approx(2 * (n - 1) / n, abs=0.01)
        assert p["dp_seconds"] > 0 and p["ddp_seconds"] > 0
    assert rank0_lab["holds"] is True


def test_rank0_lab_conclusion_follows_the_numbers(rank0_lab):
    lab = __import__("dp_rank0_bottleneck")
    rows = [dict(r) for r in rank0_lab["measured"]]
    assert lab.conclude(rows, rank0_lab["projection"])[0]["holds"]
    for r in rows:
        if r["strategy"] == "ddp":
            r["rank0_bytes"] *= 3  # as if DDP's rank 0 carried three times the others' load
    verdict, text = lab.conclude(rows, rank0_lab["projection"])
    assert not verdict["holds"] and "ddp: every rank moves about the same" in text
