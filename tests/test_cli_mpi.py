"""`minidist run` and compare's errors and warnings under mpiexec: said once, on rank 0,
with the same exit status on every rank."""
import sys

import pytest

from mpi_util import ROOT, launch, mpi_family, own_lines

pytestmark = pytest.mark.mpi
N = 3
TINY = ["--steps", "1", "--samples", "30", "--hidden", "4", "--strategies", "ddp", "--no-report"]


def _cli(*argv, timeout=120):
    import subprocess

    return subprocess.run([sys.executable, "-m", "minidist.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("flags, words", [
    (["--steps", "0"], ["--steps", "'0'"]),
    (["--samples", "0"], ["--samples", "'0'"]),
    (["--batch", "1201"], ["--batch 1201", "1200 samples"]),
    (["--hidden", "0"], ["--hidden", "'0'"]),
    (["--bucket-cap-mb", "0"], ["--bucket-cap-mb", "'0'"]),
    (["--strategies", "dp,zero3"], ["--strategies", "zero3"]),
])
def test_compare_errors_are_one_line_and_every_rank_exits_2(flags, words, tmp_path):
    proc = launch(N, "compare_status.py", *flags, timeout=120, mpi4py=False, out_dir=str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    lines = own_lines(proc.stderr)  # Open MPI's mpiexec adds a framed note of its own
    assert len(lines) == 1 and lines[0].startswith("minidist: error: "), proc.stderr
    assert all(word in lines[0] for word in words) and "Traceback" not in proc.stderr
    statuses = [(tmp_path / f"status{k}") for k in range(N)]
    if mpi_family() == "openmpi":  # it ends the job at rank 0's exit: the others may not get to write
        statuses = [s for s in statuses if s.exists()] or statuses[:1]
    assert [s.read_text() for s in statuses] == ["2"] * len(statuses) and statuses[0].name == "status0"


def test_run_propagates_the_exit_status():
    assert _cli("run", "-n", "2", "--", "python", "-c", "import sys; sys.exit(3)").returncode == 3
    one = "import os, sys; sys.exit(4 if os.environ.get('PMI_RANK', os.environ.get('OMPI_COMM_WORLD_RANK')) == '1' else 0)"
    assert _cli("run", "-n", "2", "--", "python", "-c", one).returncode == 4
    ok = _cli("run", "-n", "2", "--", "python", "-c", "print('hello')")
    assert ok.returncode == 0 and ok.stdout.count("hello") == 2


def test_empty_shards_and_uneven_batches_are_warned_once(tmp_path):
    proc = launch(N, ROOT / "scripts" / "compare.py", *TINY, "--batch", "2", "--out", tmp_path / "r.jsonl",
                  timeout=180, mpi4py=False)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("minidist: warning:")]
    assert sum("empty shard" in w and "--batch 3" in w for w in warnings) == 1, proc.stderr
    proc = launch(N, ROOT / "scripts" / "compare.py", *TINY, "--batch", "4", "--out", tmp_path / "s.jsonl",
                  timeout=180, mpi4py=False)
    assert proc.stderr.count("does not divide over 3 ranks: shards of 2 and 1") == 1, proc.stderr


def test_one_rank_is_warned_with_the_command_to_use_more(tmp_path):
    import subprocess

    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), *TINY, "--batch", "6",
                           "--out", str(tmp_path / "one.jsonl")], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("running on 1 rank") == 1 and "minidist compare -n 4" in proc.stderr


def test_ranks_outnumbering_cores_are_warned(capsys):
    from argparse import Namespace

    from minidist.compare_options import warn_about

    warn_about(Namespace(batch=64), size=8, cores=2)
    err = capsys.readouterr().err
    assert err.count("minidist: warning:") == 1 and "8 ranks on 2 cores" in err


def test_a_failed_run_leaves_no_shared_memory_files_behind():
    """An aborted job leaves MPICH's / Open MPI's segment files in /dev/shm; minidist run
    removes them once the job has failed."""
    from minidist import shm_segments

    before = shm_segments.snapshot()
    code = ("import numpy as np; from mpi4py import MPI; c = MPI.COMM_WORLD; x = np.ones(1 << 16); "
            "c.Allreduce(MPI.IN_PLACE, x); c.Barrier(); c.Abort(5)")
    assert _cli("run", "-n", "2", "--", "python", "-c", code).returncode != 0
    assert shm_segments.snapshot() - before == set()
