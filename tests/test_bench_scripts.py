"""The benchmark scripts run end to end (benchmarks are never timed tests: only that they
run and print what they promise). bench_ddp's torch-less path is exercised by
MINIDIST_BENCH_NO_TORCH=1, which makes the script act as if torch were not installed."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpi_util import mpiexec

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def run_script(name, *args, env=None, timeout=600):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.mpi
def test_bench_ddp_quick_without_torch_skips_the_torch_side():
    out = run_script("bench_ddp.py", "--quick", env={"MINIDIST_BENCH_NO_TORCH": "1"})
    assert "PyTorch DDP side skipped" in out
    for model in ("MLP 784-512-512-10, N=2", "CNN conv3x3(16)-BN-ReLU-pool2-Linear, N=2"):
        row = next(line for line in out.splitlines() if model in line and " ddp " in line)
        assert " ms " in row and "MiB/process" in row and "torch" not in row


@pytest.mark.mpi
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_bench_ddp_quick_with_torch_prints_ratios_and_memory():
    out = run_script("bench_ddp.py", "--quick", "--models", "mlp")
    assert "skipped" not in out
    row = next(line for line in out.splitlines() if " ddp " in line)
    assert "time / torch" in row and "memory / torch" in row


def test_bench_engine_without_torch_times_minidist_alone():
    out = run_script("bench_engine.py", "--models", "tiny", "--pairs", "1", "--steps", "2", "--warmup", "1",
                     env={"MINIDIST_BENCH_NO_TORCH": "1"})
    assert "PyTorch side skipped" in out and "minidist" in out and "ratio" not in out


def test_bench_engine_numpy_floor_runs_and_matches_minidists_first_loss():
    out = run_script("bench_engine.py", "--compare", "numpy", "--models", "tiny", "cnn", "--pairs", "1",
                     "--steps", "2", "--warmup", "1")
    assert "ratio minidist / numpy" in out and "same first loss: True" in out
    assert "no bare NumPy step for the CNN" in out


@pytest.mark.parametrize("model", ["tiny", "mlp"])
def test_numpy_floor_step_is_minidists_arithmetic_bit_for_bit(model):
    """enginefloor's bare NumPy step and minidist's step give the same losses, step after
    step (so the same updated weights): the floor times the same computation."""
    import numpy as np

    sys.path.insert(0, str(SCRIPTS))
    import bench_engine
    from enginefloor import numpy_stepper

    _, shape, classes = bench_engine.CASES[model]
    rng = np.random.default_rng(0)
    net = bench_engine.build(model, rng)
    x, y = rng.standard_normal(shape).astype(np.float32), rng.integers(0, classes, shape[0])
    floor, mine = numpy_stepper(net, x, y), bench_engine.stepper("minidist", net, x, y)
    assert [floor() for _ in range(3)] == [mine() for _ in range(3)]


def test_crossover_is_where_the_ring_wins_for_good():
    sys.path.insert(0, str(SCRIPTS))
    from bench_crossover import crossover

    rows = [{"bytes": b, "rd": rd, "ring": ring} for b, rd, ring in
            [(64, 1, 2), (128, 2, 1), (256, 2, 3), (512, 3, 2), (1024, 5, 4)]]
    assert crossover(rows) == 512  # 128 is a fluke: the ring loses again at 256
    assert crossover(rows[:3]) is None


@pytest.mark.mpi
def test_bench_crossover_quick_prints_a_table():
    out = run_script("bench_crossover.py", "--quick", "--ranks", "2", "--max-bytes", "4K")
    assert "N=2" in out and "MEASURED_TABLE = {2: ((0, 'recursive_doubling')" in out


@pytest.mark.mpi
def test_bench_scaling_quick_in_one_job_and_launching_jobs(tmp_path):
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable,
                           str(SCRIPTS / "bench_scaling.py"), "--quick", "--models", "cnn"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("cnn ")]
    assert len(rows) == 4 and all("N=2" in r and "comm meas/pred" in r and "sent/rank" in r for r in rows)
    out = run_script("bench_scaling.py", "--quick", "--models", "cnn", "--ranks", "1", "2",
                     "--plot", str(tmp_path / "s.png"), "--json", str(tmp_path / "s.json"))
    assert "T(N=1) / T(N)" in out and (tmp_path / "s.png").stat().st_size > 0


def test_memory_state_reads_the_normal_zone_of_buddyinfo():
    """Free memory and the part of it in blocks of 2 MiB or more (order >= 9 of 4 KiB
    pages), from the Normal zone only; nothing when the kernel does not say."""
    sys.path.insert(0, str(SCRIPTS))
    from benchutil import memory_state

    text = ("Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3\n"
            "Node 0, zone   Normal    256      0      0      0      0      0      0      0      0      2      1\n")
    # Normal: 256 single pages (1 MiB) + 2 blocks of 2 MiB + 1 block of 4 MiB = 9 MiB, 8 in large blocks
    assert memory_state(text) == "free memory 9 MiB, 8 MiB of it in blocks of 2 MiB or more"
    assert memory_state("") == ""
