"""How the strategies lay their gradients out on the wire: PyTorch's bucket assignment
(DDP) and the length of the status tail that rides at the end of the gradient messages
(sample count, non-finite flag). The strategies (minidist.parallel) send exactly this
layout and the step-cost predictor (stepcost.py) counts it, so both read it from here.
"""
from __future__ import annotations

DEFAULT_BUCKET_CAP_MB = 25.0  # PyTorch's bucket_cap_mb
FIRST_BUCKET_MB = 1.0  # PyTorch's first bucket (dist._DEFAULT_FIRST_BUCKET_BYTES)
MB = 1024 * 1024


def bucket_limits(bucket_cap_mb: float = DEFAULT_BUCKET_CAP_MB) -> tuple[int, int]:
    """(bytes per bucket, bytes of the first bucket): PyTorch's small first bucket only when
    the cap is left at its default."""
    first = FIRST_BUCKET_MB if bucket_cap_mb == DEFAULT_BUCKET_CAP_MB else bucket_cap_mb
    return int(bucket_cap_mb * MB), int(first * MB)


def assign_buckets(params, bucket_bytes: int, first_bucket_bytes: int) -> list[list]:
    """Group `params` (registration order) into buckets of parameters, reverse order, one
    dtype per bucket; bucket 0 is the one whose gradients are expected first."""
    limits = [int(first_bucket_bytes), int(bucket_bytes)]
    buckets, open_ = [], {}  # dtype -> [params, bytes, limit index]
    for p in reversed(list(params)):
        cur = open_.setdefault(p.data.dtype, [[], 0, 0])
        cur[0].append(p)
        cur[1] += p.data.nbytes
        if cur[1] >= limits[cur[2]]:
            buckets.append(cur[0])
            open_[p.data.dtype] = [[], 0, 1]
    buckets.extend(cur[0] for cur in open_.values() if cur[0])
    return buckets


def tail_length(counts: bool, flags: bool) -> int:
    """Elements the tail appends: the sample count (`counts`: ``average="samples"``) and
    the non-finite flag (`flags`: ``nonfinite`` is not ``"ignore"``)."""
    return int(bool(counts)) + int(bool(flags))
