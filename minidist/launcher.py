"""Who launched this process, and with which switches, read from the environment (MPI
launchers' variables, ``MINIDIST_*`` flags), so it needs no MPI call and loads nothing: `minidist/__init__.py` decides from it, before NumPy or MPI
is imported, whether this is one rank of several; the CLI, fail-stop and the watchdog ask
it too. Slurm's allocation-wide variables are not read for the size: a batch script that
is not itself one of the launched ranks must not count as one.
"""
from __future__ import annotations

import os

RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")


def _first_number(names, default: int) -> int:
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return default


def launcher_rank() -> int:
    """This process's rank as the MPI launcher set it (MPICH, Open MPI, PMIx, Slurm); 0 alone."""
    return _first_number(RANK_VARIABLES, 0)


def launcher_size() -> int:
    """The number of ranks the MPI launcher started (1 outside mpiexec)."""
    return _first_number(SIZE_VARIABLES, 1)


def env_flag(name: str) -> bool:
    """Whether the switch `name` (e.g. ``MINIDIST_DEBUG``) is on: set, and not one of
    "", "0", "false", "no" (any case)."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
