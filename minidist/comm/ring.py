"""Ring collectives: reduce-scatter, all-gather, and all-reduce = the two in a row.

The N ranks form a ring; at every step each rank sends one chunk to its right neighbour
and receives one from its left, so every link carries data at every step and each rank
moves about 2(N-1)/N of the buffer, whatever N. The buffer is cut as ``np.array_split``
does; rank r ends the reduce-scatter holding the reduced chunk r. `ring_schedule` is the
one place the schedule is written: `ring_allreduce` runs it as two loops of ``Sendrecv``
(reduce-scatter, then all-gather), `RingAllreduce` (ring_nonblocking.py, DDP's buckets)
posts it step by step: the same bytes, the same ledger. Chunk c is reduced along one
chain ending at rank c, (partial from the left) + (own part) at each step, and copied
byte for byte by the all-gather, so every rank ends with identical bits. float16 is
summed in float16 and travels as raw bytes. Details and a worked example: docs/ring.md.
"""
from __future__ import annotations

import numpy as np

from .tags import TAG_ALLGATHER, TAG_REDUCE_SCATTER
from .checks import RING_DTYPES, chunk_bounds, check_array, check_op, mismatch_error
from .ring_plan import remember
from .timeline import traced

_FLOAT16 = np.dtype(np.float16)


def send_chunk(rank: int, size: int, step: int) -> int:
    """The chunk rank `rank` sends to its right neighbour at step `step` of the ring."""
    return (rank - 1 - step) % size


def recv_chunk(rank: int, size: int, step: int) -> int:
    """The chunk rank `rank` receives from its left neighbour at step `step` (= what it
    sends at step + 1)."""
    return (rank - 2 - step) % size


def combine(ufunc, partial: np.ndarray, own: np.ndarray, out: np.ndarray) -> None:
    """One reduction of the ring: ``out = partial (from the left) + own``, in this order
    everywhere, so the blocking and the non-blocking ring give the same bits."""
    ufunc(partial, own, out=out)


def wire(a: np.ndarray) -> np.ndarray:
    """What MPI is handed: `a` itself, or its bytes for float16 (no MPI type needed)."""
    return a.view(np.uint8) if a.dtype == _FLOAT16 else a


def ring_scratch_count(count: int, size: int) -> int:
    """Elements of the ring all-reduce's receive buffer: the longest chunk, ceil(count/N)
    (none for one rank)."""
    return -(-count // size) if size > 1 else 0


def ring_schedule(size: int, rank: int, count: int):
    """Rank `rank`'s 2(N-1) steps of the ring all-reduce of `count` elements, in order:
    ``(send, recv, reduce)`` with `send` the slice of the flat buffer it sends right, `recv`
    the slice it receives from the left, and `reduce` True in the reduce-scatter (what
    arrives is a partial sum to add to our part) and False in the all-gather (what arrives
    is final and lands in place)."""
    bounds = chunk_bounds(count, size)
    for step in range(2 * (size - 1)):
        s0, s1 = bounds[send_chunk(rank, size, step)]
        r0, r1 = bounds[recv_chunk(rank, size, step)]
        yield slice(s0, s1), slice(r0, r1), step < size - 1


def schedule(size: int, rank: int, count: int) -> list:
    """`ring_schedule` as a list, built once per (N, rank, count) and reused (ring_plan.py)."""
    return remember((size, rank, count), lambda: list(ring_schedule(size, rank, count)))


def _exchange(comm, send: np.ndarray, recv: np.ndarray, tag: int, what: str) -> None:
    """One ring step: `send` to the right neighbour while `recv` arrives from the left."""
    left = (comm.rank - 1) % comm.size
    got = comm.sendrecv(wire(send), (comm.rank + 1) % comm.size, wire(recv), left, tag)
    if got != recv.nbytes:
        raise mismatch_error(what, comm.rank, left, got, recv.nbytes)


@traced("ring_reduce_scatter")
def ring_reduce_scatter(comm, x: np.ndarray, op: str = "sum") -> np.ndarray:
    r"""Reduce `x` over all ranks and return this rank's share of the result.

    .. math:: \text{out}_r = \big(\textstyle\sum_{i} x_i.\text{ravel}()\big)[\text{chunk } r]

    (``op="mean"`` divides by N and needs a floating dtype: TypeError for int64; "max"
    and "min" are elementwise.) Chunk r is the r-th piece of
    ``np.array_split(x.ravel(), N)``. `x` is not modified; the result is a new array.
    N-1 ``Sendrecv`` steps (steps 0..N-2 of the ring schedule, same additions as
    `ring_allreduce`); scratch: two receive buffers of one chunk each. float16 allowed.

    Shape:
        x: any shape, ``count = x.size`` elements, the same on every rank.
        output: ``(count // N + (r < count % N),)``, 1-D.
    """
    check_array(x, writable=False, dtypes=RING_DTYPES)
    ufunc = check_op(op, x.dtype)
    size = comm.size
    flat = x.reshape(-1)
    with comm.collective("ring_reduce_scatter", x, op=op):
        if size == 1:
            result = flat.copy()
        else:
            longest = ring_scratch_count(flat.size, size)
            buffers = (np.empty(longest, x.dtype), np.empty(longest, x.dtype))
            steps = schedule(size, comm.rank, flat.size)[: size - 1]
            with comm.ledger.temporary(2 * buffers[0].nbytes):
                outgoing = flat[steps[0][0]]  # step 0: our own share of chunk rank-1 starts its chain
                for i, (_, recv, _) in enumerate(steps):
                    incoming = buffers[i % 2][: recv.stop - recv.start]  # `outgoing` is the other one
                    _exchange(comm, outgoing, incoming, TAG_REDUCE_SCATTER, "ring_reduce_scatter")
                    combine(ufunc, incoming, flat[recv], incoming)  # x stays unchanged
                    outgoing = incoming  # ...travels on to the right at the next step
            result = outgoing
    if op == "mean":
        np.divide(result, size, out=result)
    return result


def _allgather_inplace(comm, flat: np.ndarray) -> None:
    """Steps N-1..2N-3 of the ring schedule: chunk ``comm.rank`` of `flat` is filled in;
    on return every chunk is, each received straight into its place (no copies)."""
    size = comm.size
    for send, recv, _ in schedule(size, comm.rank, flat.size)[size - 1:]:
        _exchange(comm, flat[send], flat[recv], TAG_ALLGATHER, "ring_allgather")


@traced("ring_allgather")
def ring_allgather(comm, chunk: np.ndarray, out: np.ndarray | None = None,
                   count: int | None = None) -> np.ndarray:
    """Every rank's chunk, concatenated in rank order, on every rank: the inverse of
    `ring_reduce_scatter`'s layout.

    Rank r passes chunk r of ``np.array_split`` of a `count`-element array (its
    ``chunk.size`` must be ``count // N + (r < count % N)``). The total `count` is
    ``out.size`` if `out` is given, else `count`, else ``N * chunk.size`` (equal chunks).
    N-1 ``Sendrecv`` steps, received straight into the output. float16 allowed.

    Shape:
        chunk: any shape, flattened; output: `out` (returned) if given, else ``(count,)``.
    """
    check_array(chunk, "chunk", writable=False, dtypes=RING_DTYPES)
    size, rank = comm.size, comm.rank
    if out is not None:
        check_array(out, "out", dtypes=RING_DTYPES)
        if out.dtype != chunk.dtype:
            raise TypeError(f"out has dtype {out.dtype} but chunk has {chunk.dtype}; they must match")
        if count is not None and count != out.size:
            raise ValueError(f"count={count} disagrees with out.size={out.size}; pass one of them")
        count = out.size
    elif count is None:
        count = size * chunk.size
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative int, the full length (got {count!r})")
    bounds = chunk_bounds(count, size)
    start, stop = bounds[rank]
    if chunk.size != stop - start:
        raise ValueError(f"rank {rank} passed a chunk of {chunk.size} elements, but chunk {rank} "
                         f"of {count} elements over {size} ranks has {stop - start} "
                         "(np.array_split layout); pass out= or count= with the full length")
    result = np.empty(count, chunk.dtype) if out is None else out
    flat = result.reshape(-1)
    flat[start:stop] = chunk.reshape(-1)
    with comm.collective("ring_allgather", result):
        _allgather_inplace(comm, flat)
    return result


@traced("ring_allreduce")
def ring_allreduce(comm, x: np.ndarray, op: str = "sum") -> np.ndarray:
    r"""All-reduce `x` in place by ring: reduce-scatter, then all-gather; returns `x`.

    .. math:: x \leftarrow \textstyle\sum_{i=0}^{N-1} x_i \quad(\text{op="mean": } /N)

    2(N-1) ``Sendrecv`` steps; each rank sends ``2*count - len(chunk r) - len(chunk r+1)``
    elements (= 2(N-1)/N of the buffer when N divides count) and receives ``2*count -
    len(chunk r-1) - len(chunk r)``. Any count (0 and < N included), any N. Every rank
    ends with bit-identical bytes, the same bytes as `RingAllreduce` (the non-blocking
    form of the same `ring_schedule`). Dtypes: float32, float64, int64, and float16
    (summed in float16). Scratch: one receive buffer of one chunk (the longest); `x`
    holds the partial sums.

    Shape:
        x: any shape, C-contiguous, writable, the same shape and dtype on every rank.
    """
    check_array(x, dtypes=RING_DTYPES)
    ufunc = check_op(op, x.dtype)
    with comm.collective("ring_allreduce", x, op=op):
        return _ring_allreduce(comm, x, op, ufunc)


def _ring_allreduce(comm, x, op, ufunc):
    """`ring_allreduce` on arguments already checked (`allreduce` checks them once)."""
    size = comm.size
    if size == 1:
        return x
    flat = x.reshape(-1)
    steps = schedule(size, comm.rank, flat.size)
    partial = comm.take_scratch(ring_scratch_count(flat.size, size), flat.dtype)
    try:
        # 1. reduce-scatter: a partial sum of chunk `recv` arrives from the left; add ours
        for send, recv, _ in steps[: size - 1]:
            incoming = partial[: recv.stop - recv.start]
            _exchange(comm, flat[send], incoming, TAG_REDUCE_SCATTER, "ring_allreduce")
            combine(ufunc, incoming, flat[recv], out=flat[recv])
        if op == "mean":  # the chunk received last, chunk `rank`, is final here and only here
            np.divide(flat[recv], size, out=flat[recv])
        # 2. all-gather: the final chunk `recv` arrives from the left, straight into place
        for send, recv, _ in steps[size - 1:]:
            _exchange(comm, flat[send], flat[recv], TAG_ALLGATHER, "ring_allreduce")
    finally:
        comm.return_scratch(partial)
    return x
