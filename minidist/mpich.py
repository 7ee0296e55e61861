"""MPICH transport settings minidist sets in a job of several ranks (a value the user set,
under any of MPICH's names for it, wins; other MPI libraries ignore them).
``MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD=524288``: MPICH sends a message of 8 KiB or more
between two processes of one node by CMA (the receiver reads the sender's memory with
``process_vm_readv``: one copy, but a rendezvous: a request, the read, an acknowledgement).
Our collectives wait for their messages in Python (comm/watchdog.py), so each round trip
of that handshake costs a poll loop; for messages under 512 KiB the plain two-copy path
through the shared-memory queue is faster. Measured on 2 ranks (docs/performance.md,
"Small all-reduces"): against MPICH's 8 KiB, the ring all-reduce of 256 KiB took 47
instead of 70 us and of 64 KiB 24 instead of 29 us; against a 256 KiB threshold, the
all-reduce of 512 KiB (256 KiB messages) took 75 instead of 89-101 us; from 1 MiB (its
messages use CMA either way) nothing changed. It must be set before MPI is initialised: `minidist/__init__.py` calls `apply_defaults`,
and `minidist run` puts it in the job's environment (cli_mpiexec.py).
"""
from __future__ import annotations

import os
import sys

MPICH_DEFAULTS = {"MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD": str(512 << 10)}
ALIAS_PREFIXES = ("MPICH_", "MPIR_PARAM_", "MPIR_CVAR_")  # MPICH reads each name under all three
applied_before_mpi: bool | None = None  # set by apply_defaults: whether MPI had not started yet


def _names(name: str) -> list[str]:
    """Every name MPICH reads the variable `name` (``MPIR_CVAR_...``) under."""
    return [prefix + name.removeprefix("MPIR_CVAR_") for prefix in ALIAS_PREFIXES]


def set_defaults(environ) -> None:
    """Put `MPICH_DEFAULTS` in `environ` (a dict, or os.environ) where it sets the variable
    under none of MPICH's names for it (`minidist run` does this for its job)."""
    for name, value in MPICH_DEFAULTS.items():
        if not any(alias in environ for alias in _names(name)):
            environ[name] = value


def apply_defaults() -> None:
    """`set_defaults` on this process's environment. They take effect only if MPI starts
    afterwards: `applied_before_mpi` says whether it had not (a script that imports mpi4py
    before minidist runs with MPICH's own settings)."""
    global applied_before_mpi
    applied_before_mpi = "mpi4py.MPI" not in sys.modules
    set_defaults(os.environ)


def settings_in_effect(library: str) -> str:
    """The report's "MPI settings": the transport variables this process's MPI (named by
    its `library` version string) was started with, as far as the environment tells."""
    if not library.startswith("MPICH"):
        return "none (not MPICH)"
    names = [alias for name in MPICH_DEFAULTS for alias in _names(name)]
    shown = " ".join(f"{name}={os.environ[name]}" for name in names if name in os.environ) or "MPICH's own"
    return shown + (" (set after MPI had started: not in effect)" if applied_before_mpi is False else "")
