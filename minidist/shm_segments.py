"""Shared-memory files an aborted MPI job leaves behind in /dev/shm, and their removal.

MPICH (``mpich_shm_*``) and Open MPI (``vader_segment.*``, ``sm_segment.*``) back their
on-node transport with files in /dev/shm that a job ended by MPI_Abort or a signal never
removes: after a day of test runs one development machine held 1,676 of them, 4.1 GB of
memory. ``minidist run``/``compare`` (after a failed job) and the test session remove the
ones that appeared while they ran and that no live process maps: a job still running
keeps its own.
"""
from __future__ import annotations

import glob
import os
import time

SHM_DIR = "/dev/shm"
PATTERNS = ("mpich_shm_*", "vader_segment.*", "sm_segment.*")


def snapshot(directory: str = SHM_DIR) -> set:
    """The MPI segment files in `directory` now (empty where it does not exist)."""
    return {p for pattern in PATTERNS for p in glob.glob(os.path.join(directory, pattern))}


def mapped_files(directory: str = SHM_DIR, others_only: bool = False) -> set:
    """Files under `directory` that some live process maps (as /proc/*/maps shows them);
    with `others_only`, some process other than this one."""
    prefix, mapped = os.path.join(directory, ""), set()
    pids = filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else [])
    for pid in (p for p in pids if not (others_only and int(p) == os.getpid())):
        try:
            with open(f"/proc/{pid}/maps") as f:
                mapped.update(line.split(maxsplit=5)[5].strip() for line in f if prefix in line)
        except (OSError, IndexError):
            continue
    return mapped


def remove_leaked(before: set, directory: str = SHM_DIR, wait: float = 0.0,
                  including_own: bool = False) -> int:
    """Remove the segment files that appeared since `before` (a `snapshot`) and that no
    live process maps (`including_own`: no process but this one, about to exit: an MPI
    singleton's own segment), waiting up to `wait` seconds for the processes of a job that
    was just torn down to exit; returns how many were removed."""
    leaked = snapshot(directory) - before
    deadline = time.monotonic() + wait
    mapped = mapped_files(directory, others_only=including_own) & leaked if leaked else set()
    while mapped and time.monotonic() < deadline:
        time.sleep(0.05)
        mapped = mapped_files(directory, others_only=including_own) & leaked
    removed = 0
    for path in leaked - mapped:
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed
