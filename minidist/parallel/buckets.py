"""DDP's gradient buckets.

Bucket assignment follows PyTorch's reducer: parameters in *reverse* registration order
(the order backward usually produces their gradients), one open bucket per dtype; a
bucket is closed as soon as its size reaches the current limit (the parameter that
crosses it is included). The first bucket's limit is ``first_bucket_bytes`` (PyTorch:
1 MiB, when the cap is left at its default), the rest ``bucket_bytes``.

Each bucket is all-reduced by `minidist.comm.RingAllreduce` (the blocking ring's schedule
posted step by step) on its own tag (`bucket_tag`), so several buckets can
be in flight between the same neighbours.
"""
from __future__ import annotations

TAG_BUCKET_BASE = 20_000  # bucket k uses tag TAG_BUCKET_BASE + k (the comm layer uses >= 30000)
TAG_BUCKET_SPAN = 10_000


def bucket_tag(index: int) -> int:
    """The MPI tag of bucket `index`'s ring, below the comm layer's tags (30000 and up).
    Tags repeat after 10000 buckets: two such buckets in flight at once make the comm
    layer raise (a tag already in flight) rather than mix their messages."""
    return TAG_BUCKET_BASE + index % TAG_BUCKET_SPAN


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
