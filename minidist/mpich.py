"""MPICH transport settings minidist sets by default when it runs as one of several ranks
(a value already in the environment wins; other MPI libraries ignore them).

``MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD=262144``: MPICH sends a message of 8 KiB or more
between two processes of one node by CMA (the receiver reads the sender's memory with
``process_vm_readv``: one copy, but a rendezvous: a request, the read, an acknowledgement).
Our collectives wait for their messages in Python (comm/watchdog.py), so each round trip
of that handshake costs a poll loop; for messages under 256 KiB the plain two-copy path
through the shared-memory queue is faster, from 256 KiB the single copy wins. Measured on
2 ranks (docs/performance.md, "Small all-reduces"): the ring all-reduce of 256 KiB took
47 instead of 70 us and of 64 KiB 24 instead of 29 us; from 1 MiB nothing changed.
It must be set before MPI is initialised: `minidist/__init__.py` calls `apply_defaults`.
"""
from __future__ import annotations

import os

MPICH_DEFAULTS = {"MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD": str(256 << 10)}


def apply_defaults() -> None:
    """Put `MPICH_DEFAULTS` in this process's environment where the variable is unset."""
    for name, value in MPICH_DEFAULTS.items():
        os.environ.setdefault(name, value)
