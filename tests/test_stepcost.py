"""The step-cost predictor: its counts equal the ledger of real steps, and its projections
show what each strategy is known for."""
import numpy as np
import pytest

from minidist.cost.stepcost import dense, ddp_buckets, predict_memory, predict_step, projection
from mpi_util import run_mpi

_runs = {}


def _ledger_run(n):
    if n not in _runs:
        _runs[n] = run_mpi(n, "stepcost_vs_ledger.py", timeout=120)
    return _runs[n]


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_predicted_counts_equal_the_ledger_phase_by_phase(n):
    for rank, cases in enumerate(_ledger_run(n)):
        for case in cases:
            if not case["check"]:
                continue
            measured = {ph: c for ph, c in case["measured"].items() if any(c.values())}
            predicted = {ph: c for ph, c in case["predicted"].items() if any(c.values())}
            assert measured == predicted, (n, rank, case["strategy"], case["options"])
            if n > 1:
                assert predicted, "a multi-rank step must communicate"


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_predicted_memory_equals_the_measured_report(n):
    for rank, cases in enumerate(_ledger_run(n)):
        for case in cases:
            if not case["check"]:
                continue
            got, want = case["memory"], case["predicted_memory"]
            label = (n, rank, case["strategy"], case["options"])
            if case["strategy"] == "ddp" and case["options"].get("overlap", True) and n > 1:
                # with overlap, fewer rings may be in flight at once than the bound assumes
                assert got["comm_peak"] <= want["comm_peak"], label
                got = {k: v for k, v in got.items() if k not in ("comm_peak", "peak")}
                want = {k: v for k, v in want.items() if k not in ("comm_peak", "peak")}
            assert got == want, label


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 3])
def test_dp_loss_on_root_counts_the_gathered_outputs_and_their_gradients_on_rank_0(n):
    """dp-root: rank 0 holds every rank's outputs (60 n + 1 rows of 5 float32), then their
    gradients, at once; the report counts both, and stepcost predicts it to the byte."""
    rank0 = [c for c in _ledger_run(n)[0] if c["options"].get("base") == 60][0]
    outputs = (60 * n + 1) * 5 * 4
    assert rank0["memory"]["comm_peak"] == 2 * outputs == rank0["predicted_memory"]["comm_peak"]


def test_ring_is_flat_in_n_while_the_root_grows_linearly():
    shape = dense(10_000_000, n_tensors=40)
    rows = {(r["strategy"], r["size"]): r for r in projection(shape, sizes=(8, 64), profile="ib-hdr")}
    for strategy in ("dp", "hub"):
        ratio = rows[(strategy, 64)]["rank0_bytes"] / rows[(strategy, 8)]["rank0_bytes"]
        assert ratio == pytest.approx(63 / 7, rel=1e-6)  # (N-1) gradients in, (N-1) out
        assert rows[(strategy, 64)]["other_bytes"] == rows[(strategy, 8)]["other_bytes"]
    ddp8, ddp64 = rows[("ddp", 8)]["rank0_bytes"], rows[("ddp", 64)]["rank0_bytes"]
    assert ddp8 == pytest.approx(2 * 2 * 7 / 8 * 40e6, rel=1e-3)  # 2(N-1)/N each way
    assert ddp64 == pytest.approx(2 * 2 * 63 / 64 * 40e6, rel=1e-3)
    assert rows[("ddp", 64)]["seconds"] < rows[("dp", 64)]["seconds"] / 10


def test_dp_rank0_holds_every_gradient_and_alone_the_optimizer_state():
    shape = dense(1000, np.float64)
    mem = predict_memory("dp", 4, shape, optimizer_slots=2)
    assert mem["rank0"]["optimizer"] == 2 * 8000 and mem["other"]["optimizer"] == 0
    # rank 0 keeps a row per rank for the gather (each 1000 gradients + the 2-element tail,
    # reduced in place), the others one row; the broadcast parameters are transient
    assert mem["rank0"]["comm_buffers"] == 4 * 8016 and mem["other"]["comm_buffers"] == 8016
    assert mem["rank0"]["comm_peak"] == 8016
    ddp = predict_memory("ddp", 4, shape, optimizer_slots=2)
    assert ddp["rank0"] == ddp["other"] and ddp["other"]["optimizer"] == 2 * 8000


def test_buckets_follow_pytorch_caps():
    shape = dense(3 * 1024 * 1024, np.float32, n_tensors=12)  # 12 tensors of 1 MiB
    sizes = [n for n, _ in ddp_buckets(shape)]
    assert sum(sizes) == 3 * 1024 * 1024
    assert sizes[0] == 256 * 1024  # the first bucket closes at 1 MiB
    assert [n for n, _ in ddp_buckets(shape, bucket_cap_mb=4.0)] == [1024 * 1024, 1024 * 1024, 1024 * 1024]


def test_local_and_one_rank_cost_nothing():
    shape = dense(100)
    for strategy in ("local", "dp", "hub", "ddp"):
        assert predict_step(strategy, 1, shape)["seconds"] == 0
    with pytest.raises(ValueError, match="strategy must be one of"):
        predict_step("allgather", 4, shape)
