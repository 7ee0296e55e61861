"""The step's status, riding at the end of each rank's gradient message (no collective of
its own): the rank's sample count, then a bitmap of the ranks whose local gradients were
not finite. Summed by the gradient synchronisation itself, the count becomes the global
batch (every rank divides by it) and the bitmap names every culprit.

Why a bitmap: rank r sets bit r % k of element r // k, k = the integers the dtype holds
exactly (float16 11 bits, float32 24, float64 53). Each bit is set by one rank only, so
the sum stays an exact integer and reads back as the set of ranks; it costs ceil(N / k)
elements, against N for one flag element per rank, and one flag summed to a count could
say how many ranks failed but not which.
"""
from __future__ import annotations

import numpy as np

NONFINITE = ("raise", "skip", "ignore")


class NonFiniteGradientError(FloatingPointError):
    """Raised on every rank when some rank's local gradients held NaN or Inf
    (``nonfinite="raise"``)."""


def bits_per_element(dtype) -> int:
    """How many ranks one element of `dtype` can flag exactly (its mantissa bits + 1)."""
    return int(np.finfo(dtype).nmant) + 1


def all_finite(x: np.ndarray) -> bool:
    """True when `x` holds no NaN and no Inf (two reductions, no temporary array)."""
    return x.size == 0 or bool(np.isfinite(x.min()) and np.isfinite(x.max()))


class StatusTail:
    """The tail's layout for one message dtype on `size` ranks: ``[count]`` when `counts`
    (``average="samples"``), then the rank bitmap when `flags` (``nonfinite`` is not
    ``"ignore"``). `length` is 0 when it carries neither."""

    def __init__(self, dtype, size: int, counts: bool, flags: bool):
        self.dtype, self.size = np.dtype(dtype), int(size)
        self.counts, self.flags = bool(counts), bool(flags)
        self.bits = bits_per_element(self.dtype)
        self.length = int(self.counts) + (-(-self.size // self.bits) if self.flags else 0)

    def write(self, out: np.ndarray, samples: float, finite: bool, rank: int) -> None:
        """This rank's tail into `out` (`length` elements)."""
        self.encode(out, samples, [] if finite else [rank])

    def encode(self, out: np.ndarray, total: float | None, bad: list) -> None:
        """A tail that `read` decodes as ``(total, bad)``, into `out` (dp's rank 0 sends
        the summed one back with the parameters)."""
        out[...] = 0
        if self.counts:
            out[0] = total
        if self.flags and bad:
            ranks = np.asarray(bad, dtype=np.int64)
            np.add.at(out, int(self.counts) + ranks // self.bits, 2.0 ** (ranks % self.bits))

    def read(self, summed: np.ndarray) -> tuple[float | None, list[int]]:
        """``(total samples or None, [ranks whose gradients were not finite])`` from the
        tail summed over every rank."""
        total = float(summed[0]) if self.counts else None
        if not self.flags:
            return total, []
        words = summed[int(self.counts):].astype(np.int64)
        bits = (words[:, None] >> np.arange(self.bits)) & 1
        return total, np.flatnonzero(bits.reshape(-1)[: self.size]).tolist()


def tail_length(dtype, size: int, counts: bool, flags: bool) -> int:
    """Elements `StatusTail` appends (what `minidist.cost.stepcost` predicts)."""
    return StatusTail(dtype, size, counts, flags).length
