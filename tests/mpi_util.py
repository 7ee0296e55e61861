"""Run a worker script under ``mpiexec -n N python -m mpi4py`` from pytest.

A worker writes its findings as JSON with `emit(obj)`; `run_mpi` returns one object per
rank (rank order). The subprocess has a timeout, so a hang fails one test instead of
freezing CI, and `python -m mpi4py` makes an exception on one rank abort the whole job.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # this checkout's minidist (the launcher below is its own)

from minidist.cli_mpiexec import command, family  # noqa: E402


def mpiexec() -> str:
    """The venv's mpiexec (MPICH's or Open MPI's wheel), else PATH's."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else (shutil.which("mpiexec") or "mpiexec")


def mpi_family() -> str:
    """"mpich" or "openmpi" (or "unknown"): which MPI this test run launches."""
    return family(mpiexec())


def launch(n: int, script: str | os.PathLike, *args: str, timeout: float = 120.0,
           mpi4py: bool = True, out_dir: str | None = None) -> subprocess.CompletedProcess:
    """Run `script` (a path, or a name under tests/mpi/) on `n` ranks with one BLAS thread
    each and the checkout on PYTHONPATH; returns the finished process, whatever its exit
    code. `mpi4py=False` leaves out ``-m mpi4py`` (whose abort-on-exception would hide a
    rank left hanging). A hang past `timeout` fails with the job's output so far."""
    script = Path(script)
    if not script.is_absolute():
        script = HERE / "mpi" / script
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    if out_dir is not None:
        env["MINIDIST_TEST_OUT"] = out_dir
    # MPICH or Open MPI (as root and with more ranks than cores, Open MPI needs telling)
    cmd, env = command(n, [sys.executable, *(["-m", "mpi4py"] if mpi4py else []), str(script),
                           *map(str, args)], mpiexec=mpiexec(), env=env)
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout}s (a rank was left waiting)\n"
                             f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}") from None


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`proc`, after failing the test with the job's output if it exited non-zero."""
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(proc.args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def run_mpi(n: int, script: str | os.PathLike, *args: str, timeout: float = 120.0,
            mpi4py: bool = True) -> list:
    """Run `script` on `n` ranks (see `launch`); return each rank's emitted object. Fails
    with the job's output if it exits non-zero, times out, or a rank emits nothing."""
    with tempfile.TemporaryDirectory() as out:
        proc = check(launch(n, script, *args, timeout=timeout, mpi4py=mpi4py, out_dir=out))
        results = []
        for rank in range(n):
            path = Path(out) / f"rank{rank}.json"
            if not path.exists():
                raise AssertionError(f"rank {rank} emitted nothing\nstdout:\n{proc.stdout[-4000:]}\n"
                                     f"stderr:\n{proc.stderr[-4000:]}")
            results.append(json.loads(path.read_text()))
        return results


def emit(obj) -> None:
    """Called inside a worker: write this rank's result for `run_mpi`."""
    from mpi4py import MPI

    out = os.environ.get("MINIDIST_TEST_OUT")
    text = json.dumps(obj)
    if out is None:
        print(text)
        return
    Path(out, f"rank{MPI.COMM_WORLD.rank}.json").write_text(text)


def own_lines(text: str) -> list[str]:
    """The non-blank lines of a job's output without the launcher's own notices (Open MPI
    frames them between rules of dashes, e.g. "prterun detected that one or more processes
    exited with non-zero status")."""
    lines, inside = [], False
    for line in text.splitlines():
        if len(line.strip()) > 20 and set(line.strip()) == {"-"}:
            inside = not inside
        elif not inside and line.strip():
            lines.append(line)
    return lines
