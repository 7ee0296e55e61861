"""MPICH transport settings minidist sets by default when it runs as one of several ranks
(a value the user set, under any of MPICH's names for it, wins; other MPI libraries
ignore them).

``MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD=262144``: MPICH sends a message of 8 KiB or more
between two processes of one node by CMA (the receiver reads the sender's memory with
``process_vm_readv``: one copy, but a rendezvous: a request, the read, an acknowledgement).
Our collectives wait for their messages in Python (comm/watchdog.py), so each round trip
of that handshake costs a poll loop; for messages under 256 KiB the plain two-copy path
through the shared-memory queue is faster, from 256 KiB the single copy wins. Measured on
2 ranks (docs/performance.md, "Small all-reduces"): the ring all-reduce of 256 KiB took
47 instead of 70 us and of 64 KiB 24 instead of 29 us; from 1 MiB nothing changed.
It must be set before MPI is initialised: `minidist/__init__.py` calls `apply_defaults`,
and `minidist run` puts it in the job's environment (cli_mpiexec.py).
"""
from __future__ import annotations

import os
import sys

MPICH_DEFAULTS = {"MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD": str(256 << 10)}
ALIAS_PREFIXES = ("MPICH_", "MPIR_PARAM_", "MPIR_CVAR_")  # MPICH reads each name under all three
applied_before_mpi: bool | None = None  # set by apply_defaults: whether MPI had not started yet


def user_set(name: str, environ=os.environ) -> bool:
    """Whether `environ` sets the MPICH variable `name` under any of its names."""
    base = name.removeprefix("MPIR_CVAR_")
    return any(prefix + base in environ for prefix in ALIAS_PREFIXES)


def apply_defaults() -> None:
    """Put `MPICH_DEFAULTS` in this process's environment where the user set the variable
    under none of MPICH's names for it. They take effect only if MPI starts afterwards:
    `applied_before_mpi` says whether it had not (a script that imports mpi4py before
    minidist runs with MPICH's own settings)."""
    global applied_before_mpi
    applied_before_mpi = "mpi4py.MPI" not in sys.modules
    for name, value in MPICH_DEFAULTS.items():
        if not user_set(name):
            os.environ[name] = value


def settings_in_effect(library: str) -> str:
    """The report's "MPI settings": the transport variables this process's MPI (named by
    its `library` version string) was started with, as far as the environment tells."""
    if not library.startswith("MPICH"):
        return "none (not MPICH)"
    names = [prefix + name.removeprefix("MPIR_CVAR_") for name in MPICH_DEFAULTS for prefix in ALIAS_PREFIXES]
    shown = " ".join(f"{name}={os.environ[name]}" for name in names if name in os.environ) or "MPICH's own"
    return shown + (" (set after MPI had started: not in effect)" if applied_before_mpi is False else "")
