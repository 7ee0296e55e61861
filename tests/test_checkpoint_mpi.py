"""Checkpoints under mpiexec -n 2: train 6 steps, or train 3, save, and resume 3 in a new
job: the bytes agree for ddp, dp and hub. Also: a wrapped model's load_state_dict names
the rank whose replica differs, and a checkpoint one rank cannot read fails every rank.
scripts/compare.py --checkpoint / --resume continue a run bitwise."""
import json

import numpy as np
import pytest

from mpi_util import ROOT, check, launch, run_mpi

_cache = {}


def results(tmp_path_factory):
    if not _cache:
        folder = tmp_path_factory.mktemp("checkpoints")
        _cache["first"] = run_mpi(2, "checkpoint_resume.py", "first", str(folder), timeout=180)
        _cache["resume"] = run_mpi(2, "checkpoint_resume.py", "resume", str(folder), timeout=180)
    return _cache["first"], _cache["resume"]


@pytest.mark.mpi
@pytest.mark.parametrize("strategy", ["ddp", "ddp-static", "dp", "hub"])
def test_resume_in_a_new_job_is_bitwise_equal(tmp_path_factory, strategy):
    first, resumed = results(tmp_path_factory)
    for rank in range(2):
        assert resumed[rank][strategy] == first[rank][strategy], f"rank {rank}"
        assert resumed[rank][f"{strategy}_steps"] == 6
        assert resumed[rank][f"{strategy}_graph"] == first[rank][f"{strategy}_graph"]  # static graph kept


@pytest.mark.mpi
def test_wrapped_load_state_dict_names_the_rank_that_differs(tmp_path_factory):
    first, _ = results(tmp_path_factory)
    for r in first:
        assert r["replica"]["raised"] and r["replica"]["ranks"] == [1]
        assert "load_state_dict" in r["replica"]["message"]


@pytest.mark.mpi
def test_a_file_one_rank_cannot_read_fails_every_rank_alike(tmp_path_factory):
    first, _ = results(tmp_path_factory)
    messages = {r["missing"]["message"] for r in first}
    assert all(r["missing"]["raised"] for r in first) and len(messages) == 1
    assert "on rank 1" in messages.pop()


def _compare(tmp_path, *args):
    return check(launch(2, ROOT / "scripts" / "compare.py", "--no-report", "--strategies", "dp,ddp",
                        *map(str, args), timeout=240))


def _losses(path, first_step):
    return {(r["strategy"], r["step"], r["rank"]): r["loss"] for r in map(json.loads, open(path))
            if r["type"] == "step" and r["step"] >= first_step}


@pytest.mark.mpi
def test_compare_resume_continues_bitwise(tmp_path):
    _compare(tmp_path, "--steps", 6, "--out", tmp_path / "full.jsonl", "--checkpoint", tmp_path / "full")
    _compare(tmp_path, "--steps", 3, "--out", tmp_path / "a.jsonl", "--checkpoint", tmp_path / "half")
    _compare(tmp_path, "--steps", 3, "--out", tmp_path / "b.jsonl", "--resume", tmp_path / "half",
             "--checkpoint", tmp_path / "resumed")
    resumed = _losses(tmp_path / "b.jsonl", 0)
    assert sorted({step for _, step, _ in resumed}) == [3, 4, 5]
    assert resumed == _losses(tmp_path / "full.jsonl", 3)
    for variant in ("local", "dp", "ddp"):
        with np.load(tmp_path / "full" / f"{variant}.npz") as a, \
                np.load(tmp_path / "resumed" / f"{variant}.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                if key != "__minidist__":
                    assert a[key].tobytes() == b[key].tobytes(), (variant, key)


def test_compare_resume_without_the_files_is_refused_up_front(tmp_path):
    proc = launch(1, ROOT / "scripts" / "compare.py", "--no-report", "--strategies", "dp",
                  "--resume", str(tmp_path / "none"), timeout=120)
    assert proc.returncode != 0
    assert "--resume" in proc.stderr and "no checkpoint for ['local', 'dp']" in proc.stderr
