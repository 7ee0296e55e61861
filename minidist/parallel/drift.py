"""Replica drift check: are the parameters still byte-identical on every rank?

Data parallelism is only correct while every replica holds the same parameters. Each
rank hashes its parameters (SHA-256 over names, shapes, dtypes and bytes); rank 0 gathers
the 32-byte digests, compares them with its own and broadcasts the verdict, so every rank
raises the same `ReplicaDriftError` naming the step and the ranks that differ. Cost per
check: one gather and one broadcast of a few bytes (phase ``"drift-check"``).

``wrap(..., check_replicas=True)`` runs `assert_replicas_agree` after every step.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..comm import broadcast, gather_to_root

PHASE = "drift-check"


class ReplicaDriftError(RuntimeError):
    """Raised on every rank when some replica's parameters differ from rank 0's.

    Attributes:
        step (int), ranks (list[int]): the step checked and the ranks that differ.
    """

    def __init__(self, message: str, step, ranks):
        super().__init__(message)
        self.step, self.ranks = step, list(ranks)


def parameter_digest(module) -> bytes:
    """SHA-256 of every parameter's name, shape, dtype and bytes, in registration order."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(f"{name}:{p.data.shape}:{p.data.dtype};".encode())
        h.update(np.ascontiguousarray(p.data).tobytes())
    return h.digest()


def assert_replicas_agree(module, comm, step=None) -> None:
    """Compare every rank's `parameter_digest` with rank 0's; raise `ReplicaDriftError` on
    every rank if any differs. A collective: every rank must call it at the same point."""
    if comm is None or comm.size == 1:
        return
    digest = np.frombuffer(parameter_digest(module), dtype=np.int64).copy()  # 4 x int64
    with comm.phase(PHASE):
        gathered = gather_to_root(comm, digest, root=0)
        differs = np.zeros(comm.size, dtype=np.int64)
        if comm.rank == 0:
            differs[:] = np.any(gathered != gathered[0], axis=1)
        broadcast(comm, differs, root=0)
    ranks = [int(r) for r in np.flatnonzero(differs)]
    if ranks:
        at = "" if step is None else f" at step {step}"
        raise ReplicaDriftError(
            f"replicas drifted{at}: the parameters of rank(s) {ranks} differ from rank 0's "
            f"(SHA-256 of every parameter's bytes). Something updated one replica differently: "
            f"look for per-rank randomness, an optimizer stepped on some ranks only, or a "
            f"gradient that was not averaged", step, ranks)
