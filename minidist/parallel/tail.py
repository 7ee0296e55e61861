"""The step's status, riding at the end of each rank's first gradient message (no
collective of its own): the rank's sample count, then 1 if its local gradients held NaN
or Inf (else 0). Summed by the gradient synchronisation itself, these become the global
batch (every rank divides by it) and the number of ranks with non-finite gradients.

Why a count and not a rank bitmap: the tail stays two elements at any N (a bitmap of
ranks needs ceil(N / 24) float32 elements: 171 at N = 4096, a sixth of a small model),
and the count is exact in any float dtype for N <= 2048. Naming the culprits costs one
all-gather of one int64 per rank, run only in a step that has some (`nonfinite_ranks`).
"""
from __future__ import annotations

import numpy as np

from ..comm import ring_allgather
from ..cost.layout import tail_length  # noqa: F401  (re-exported)

NONFINITE = ("raise", "skip", "ignore")


class NonFiniteGradientError(FloatingPointError):
    """Raised on every rank when some rank's local gradients held NaN or Inf
    (``nonfinite="raise"``)."""


def all_finite(x: np.ndarray) -> bool:
    """True when `x` holds no NaN and no Inf (two reductions, no temporary array)."""
    return x.size == 0 or bool(np.isfinite(x.min()) and np.isfinite(x.max()))


class StatusTail:
    """The tail of one message: ``[count]`` when `counts`, then ``[flag]`` when `flags`;
    `length` is 0 when it carries neither."""

    def __init__(self, counts: bool, flags: bool):
        self.counts, self.flags = bool(counts), bool(flags)
        self.length = tail_length(counts, flags)

    def encode(self, out: np.ndarray, total: float | None, nonfinite: int) -> None:
        """A tail that `read` decodes as ``(total, nonfinite)``, into `out`: this rank's
        own (its samples, 0 or 1), or dp's rank 0 sending the summed one back."""
        if self.counts:
            out[0] = total
        if self.flags:
            out[int(self.counts)] = nonfinite

    def read(self, summed: np.ndarray) -> tuple[float | None, int]:
        """``(total samples or None, how many ranks had non-finite gradients)``."""
        total = float(summed[0]) if self.counts else None
        return total, int(round(float(summed[int(self.counts)]))) if self.flags else 0


def nonfinite_ranks(comm, finite: bool) -> list[int]:
    """The ranks whose local gradients were not finite: every rank's flag, by one ring
    all-gather of one int64 (phase ``"nonfinite-ranks"``); call it on every rank."""
    if comm is None or comm.size == 1:
        return [] if finite else [0]
    with comm.phase("nonfinite-ranks"):
        flags = ring_allgather(comm, np.array([0 if finite else 1], dtype=np.int64))
    return np.flatnonzero(flags).tolist()


def verdict(total: float | None, nonfinite: int, policy: str) -> str | None:
    """None when the step may update; else "no-samples", "skip" or "nonfinite" (to raise),
    from the summed tail and the ``nonfinite`` policy."""
    if total is not None and total <= 0:
        return "no-samples"
    if nonfinite:
        return "skip" if policy == "skip" else "nonfinite"
    return None


def judge(who: str, step: int, comm, total, nonfinite: int, policy: str, finite: bool) -> bool:
    """Act on the step's summed status, called on every rank alike: raise when no rank saw
    a sample, or (``policy="raise"``) when some rank's gradients were not finite, naming
    `step` and those ranks; return True when the update is to be skipped."""
    kind = verdict(total, nonfinite, policy)
    if kind == "no-samples":
        raise RuntimeError(f"{who}: no rank saw any sample since the last step; call model(x) with "
                           "gradients enabled before backward() and step()")
    if kind == "nonfinite":
        raise NonFiniteGradientError(
            f"{who}: at step {step}, the local gradients of rank(s) {nonfinite_ranks(comm, finite)} were not "
            "finite (NaN or Inf); find the batch or the learning rate that overflows, or wrap with "
            "nonfinite='skip' to skip such steps (as loss scaling does)")
    return kind == "skip"
