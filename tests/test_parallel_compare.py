"""scripts/compare.py end to end: one launch on 3 ranks with an uneven global batch and
SyncBatchNorm; the JSONL it writes must hold the header, one record per strategy, step and
rank, the reference agreement, and ledgers that add up across ranks."""
import json

import pytest

from mpi_util import ROOT, check, launch

STRATEGIES = ["local", "dp", "dp-scatter", "dp-root", "hub", "ddp", "ddp-no-overlap", "ddp-fp16"]
N, STEPS, BATCH = 3, 3, 50


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "run.jsonl"
    proc = check(launch(N, ROOT / "scripts" / "compare.py", "--norm", "sync", "--steps", STEPS,
                        "--batch", BATCH, "--hidden", 16, "--strategies", ",".join(STRATEGIES),
                        "--out", out, mpi4py=False))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return proc.stdout, lines[0], lines[1:]


@pytest.mark.mpi
def test_header_and_one_record_per_strategy_step_and_rank(run):
    stdout, header, records = run
    assert header["type"] == "header" and header["world_size"] == N
    assert header["strategies"] == STRATEGIES and header["shard_sizes"] == [17, 17, 16]
    keys = sorted((r["strategy"], r["step"], r["rank"]) for r in records)
    assert keys == sorted((s, t, k) for s in STRATEGIES for t in range(STEPS) for k in range(N))
    for strategy in STRATEGIES:
        assert strategy in stdout  # the summary table


@pytest.mark.mpi
def test_every_strategy_tracks_the_reference(run):
    _, _, records = run
    for r in records:
        bound = 1e-2 if r["strategy"] == "ddp-fp16" else 1e-10
        assert r["max_param_diff"] < bound, (r["strategy"], r["step"], r["rank"], r["max_param_diff"])
    fp16 = max(r["max_param_diff"] for r in records if r["strategy"] == "ddp-fp16")
    assert fp16 > 1e-10  # fp16 rounding is visible, as it should be


@pytest.mark.mpi
def test_ledgers_balance_across_ranks_and_times_are_split(run):
    _, _, records = run
    for strategy in STRATEGIES[1:]:
        for step in range(STEPS):
            rows = [r for r in records if r["strategy"] == strategy and r["step"] == step]
            phases = {p for r in rows for p in r["phases"]}
            for phase in phases:
                sent = sum(r["phases"].get(phase, {}).get("bytes_sent", 0) for r in rows)
                received = sum(r["phases"].get(phase, {}).get("bytes_received", 0) for r in rows)
                assert sent == received and sent > 0, (strategy, step, phase)
            assert "syncbn" in phases and ("grad-gather" in phases or "grad-reduce" in phases
                                           or "grad-allreduce" in phases)
    for r in records:
        assert r["wall_seconds"] >= r["comm_seconds"] >= 0 and r["compute_seconds"] >= 0
        assert r["memory"]["peak"] >= r["memory"]["total"] > 0
    dp_opt = [r["memory"]["optimizer"] for r in records if r["strategy"] == "dp" and r["step"] == 0]
    assert dp_opt[0] > 0 and dp_opt[1:] == [0] * (N - 1)
