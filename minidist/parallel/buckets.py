"""DDP's gradient buckets.

Bucket assignment follows PyTorch's reducer: parameters in *reverse* registration order
(the order backward usually produces their gradients), one open bucket per dtype; a
bucket is closed as soon as its size reaches the current limit (the parameter that
crosses it is included). The first bucket's limit is ``first_bucket_bytes`` (PyTorch:
1 MiB, when the cap is left at its default), the rest ``bucket_bytes``.

Each bucket is all-reduced by `minidist.comm.RingAllreduce` (the blocking ring's schedule
posted step by step) on its own tag (`bucket_tag`), so several buckets can
be in flight between the same neighbours; each DDP instance on a communicator has its own
span of tags (`instance_tag_base`), so two wrapped models can be stepped interleaved.

`check_same_order` checks DDP's ``static_graph`` promise: every rank produced the same
gradients in the same order.
"""
from __future__ import annotations

import numpy as np

from ..comm import ring_allgather

from ..comm.tags import TAG_BUCKET_BASE, TAG_BUCKET_SPAN, TAG_INSTANCE_BASE
from ..cost.layout import DEFAULT_BUCKET_CAP_MB, FIRST_BUCKET_MB, assign_buckets, bucket_limits  # noqa: F401

def instance_tag_base(instance: int, tag_ub: int) -> int:
    """The first bucket tag of DDP instance `instance` (0, 1, ... in construction order on
    one communicator). Instance 0 uses 20000..29999; instance k >= 1 uses the k-th span of
    10000 tags from 40000, as long as it stays <= `tag_ub` (the communicator's MPI_TAG_UB:
    MPICH 2**31-1, but the standard only guarantees 32767). Past that the instances wrap
    around the spans that fit, so two instances may share tags: that is only an error if
    both have rings in flight at once, and then the comm layer raises (never mixes)."""
    slots = 1 + max(0, (int(tag_ub) + 1 - TAG_INSTANCE_BASE) // TAG_BUCKET_SPAN)
    slot = int(instance) % slots
    return TAG_BUCKET_BASE if slot == 0 else TAG_INSTANCE_BASE + (slot - 1) * TAG_BUCKET_SPAN


def bucket_tag(index: int, base: int = TAG_BUCKET_BASE) -> int:
    """The MPI tag of bucket `index`'s ring in the span that starts at `base`
    (`instance_tag_base`). Tags repeat after 10000 buckets: two such buckets in flight at
    once make the comm layer raise (a tag already in flight) rather than mix their messages."""
    return base + index % TAG_BUCKET_SPAN


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def check_same_order(comm, fired: list[int], names: list[str], max_named: int = 4) -> None:
    """Raise the same RuntimeError on every rank unless every rank's hooks fired for the
    same parameters in the same order. `fired`: this rank's parameter indices in firing
    order; `names`: the parameters' names, by index. One all-gather of one int64 per
    parameter (its position in the order, -1 if its hook did not fire), phase "verify"."""
    if comm.size == 1:
        return
    position = np.full(len(names), -1, dtype=np.int64)
    position[np.asarray(fired, dtype=np.int64)] = np.arange(len(fired))
    with comm.phase("verify"):
        everyone = ring_allgather(comm, position).reshape(comm.size, len(names))
    differing = np.flatnonzero((everyone != everyone[0]).any(axis=0))
    if differing.size == 0:
        return
    missing = (everyone[:, differing] < 0).any(axis=0)  # used on some ranks only: named first
    differing = np.concatenate([differing[missing], differing[~missing]])
    described = []
    for i in differing[:max_named]:  # one clause per parameter: which ranks did what
        column = everyone[:, i]
        groups = [(int(v), np.flatnonzero(column == v).tolist()) for v in np.unique(column)]
        what = [f"rank(s) {ranks}: {'no gradient' if v < 0 else 'the ' + _ordinal(v + 1) + ' gradient'}"
                for v, ranks in groups]
        described.append(f"{names[i]!r} ({'; '.join(what)})")
    more = f" and {differing.size - max_named} more" if differing.size > max_named else ""
    raise RuntimeError(f"DDP(static_graph=True): the ranks did not produce the same gradients in the "
                       f"same order in the first iteration, which static_graph promises: "
                       f"{', '.join(described)}{more}. Wrap with static_graph=False (the default) when "
                       "ranks may use different parameters or a different order")
