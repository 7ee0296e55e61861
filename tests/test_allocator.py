"""minidist's allocator default under MPI (minidist/allocator.py): with it, a step that
frees and re-allocates the same megabytes takes no page faults; without it (or with
MINIDIST_MALLOC=default, or outside MPI) glibc trims and re-faults them every time."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import resource, numpy as np, minidist  # noqa: F401  (the import applies the default)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # a training step's temporaries, freed at its end
    arrays = [np.ones((mib << 20) // 8) for mib in (1, 2, 3, 4, 6)]
    del arrays
step(); step()
before = faults()
for _ in range(10):
    step()
print((faults() - before) / 10)
"""


def faults_per_step(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MINIDIST_MALLOC")}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(ROOT), **env})
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_under_mpi_freed_memory_is_kept_and_the_switch_turns_it_off():
    kept = faults_per_step(PMI_SIZE="2")
    assert kept < 50  # 16 MiB per step come back without faulting
    # without it the 16 MiB fault in again: 4096 pages of 4 KiB, or at least 8 huge pages
    assert faults_per_step(PMI_SIZE="2", MINIDIST_MALLOC="default") >= kept + 8
    assert faults_per_step() >= kept + 8  # one process, no MPI: glibc left as it is
