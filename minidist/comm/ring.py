"""Ring collectives: reduce-scatter, all-gather, and all-reduce = the two in a row.

The N ranks form a ring; every step each rank sends one chunk to its right neighbour and
receives one from its left (one ``Sendrecv``), so every link carries data at every step
and each rank moves about 2(N-1)/N of the buffer in all, whatever N.

Chunk layout: the flattened buffer of `count` elements is cut as ``np.array_split`` does,
into N chunks, the first ``count % N`` of them one element longer. **Rank r ends the
reduce-scatter holding the reduced chunk r** and contributes chunk r to the all-gather.
Chunks may be empty (count < N); empty messages are still sent, so the message count is
always 2(N-1) for an all-reduce (see counts.py).

The schedule (one rotation for the whole all-reduce): at step s = 0 .. 2N-3 rank r sends
chunk ``(r - 1 - s) % N`` and receives chunk ``(r - 2 - s) % N``. Steps 0..N-2 are the
reduce-scatter (what arrives is a partial, added to our own part of that chunk), steps
N-1..2N-3 the all-gather (what arrives is final and lands in place). `RingSteps` holds
that schedule for the in-place all-reduce; the blocking `ring_allreduce` drives it with
``Sendrecv``, and `RingAllreduce` (ring_nonblocking.py; DDP's overlapped buckets) with
posted ``isend``/``irecv``: one schedule, one order of additions, bit-identical results
and the same ledger.

Bit-identical results: chunk c is reduced along a single chain, starting at rank c+1 and
ending at rank c, each step computing (partial from the left) + (own contribution); only
rank c holds the final value, and the all-gather copies it byte for byte to everyone.

Dtypes: float32, float64, int64 and float16 (`checks.RING_DTYPES`). float16 is summed in
float16, each addition rounded (PyTorch's fp16_compress_hook does the same); it travels
as raw bytes so that it needs no MPI half-precision type.
"""
from __future__ import annotations

import numpy as np

from .tags import TAG_ALLGATHER, TAG_REDUCE_SCATTER
from .checks import RING_DTYPES, chunk_bounds, check_array, check_op, mismatch_error
from .ring_plan import ring_steps
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


class RingSteps:
    """The in-place ring all-reduce of the 1-D array `flat`, step by step.

    ``buffers(step)`` gives the (send, receive) arrays of a step; once both messages of
    the step are complete, ``finish(step)`` applies it (reduce-scatter: the received
    partial + our part, written into `flat`; the last one also divides for "mean").
    Steps must run in order 0 .. ``total - 1``. `buffer` is the receive scratch, reused at
    every reduce-scatter step: a 1-D array of `flat`'s dtype with at least
    ``ring_scratch_count(flat.size, size)`` elements, which the caller owns (takes from
    and returns to `Communicator.take_scratch`); `scratch_bytes` is what the ring uses
    of it (the bytes the ledger reports).
    """

    __slots__ = ("flat", "rank", "size", "total", "scratch_bytes", "_ufunc", "_mean",
                 "_sends", "_recvs", "_partials", "_owns")

    def __init__(self, flat: np.ndarray, rank: int, size: int, op: str, ufunc,
                 buffer: np.ndarray):
        self.flat, self.rank, self.size = flat, rank, size
        self.total = 2 * (size - 1)
        self._ufunc, self._mean = ufunc, op == "mean"
        longest = ring_scratch_count(flat.size, size)
        if buffer.dtype != flat.dtype or buffer.size < longest:
            raise ValueError(f"RingSteps needs a receive buffer of at least {longest} elements of "
                             f"{flat.dtype} (got {buffer.size} of {buffer.dtype})")
        self.scratch_bytes = longest * flat.itemsize
        # every step's views, made once: the per-step work is then two list lookups
        bounds = chunk_bounds(flat.size, size)
        sends, recvs = [], []
        partials, owns = self._partials, self._owns = [], []
        for step in range(self.total):
            s0, s1 = bounds[(rank - 1 - step) % size]  # send_chunk(rank, size, step)
            r0, r1 = bounds[(rank - 2 - step) % size]  # recv_chunk(rank, size, step)
            sends.append(flat[s0:s1])
            if step < size - 1:  # reduce-scatter: a partial arrives, to add to our part
                partials.append(buffer[: r1 - r0])
                owns.append(flat[r0:r1])
                recvs.append(partials[-1])
            else:  # all-gather: the final chunk lands in place
                recvs.append(flat[r0:r1])
        if flat.dtype == _FLOAT16:  # float16 travels as raw bytes
            sends, recvs = [wire(a) for a in sends], [wire(a) for a in recvs]
        self._sends, self._recvs = sends, recvs

    def buffers(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(what to send right, where to receive from the left) at `step`; as bytes for
        float16."""
        return self._sends[step], self._recvs[step]

    def finish(self, step: int) -> None:
        """Apply `step` once its receive is complete."""
        if step >= self.size - 1:  # all-gather: the final chunk is already in place
            return
        own = self._owns[step]
        combine(self._ufunc, self._partials[step], own, own)
        if step == self.size - 2 and self._mean:  # chunk `rank`, final here and only here
            np.divide(own, self.size, out=own)


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
    rank, size = comm.rank, comm.size
    flat = x.reshape(-1)
    if size == 1:
        result = flat.copy()
    else:
        bounds = chunk_bounds(flat.size, size)
        longest = -(-flat.size // size)
        buffers = (np.empty(longest, x.dtype), np.empty(longest, x.dtype))
        right, left = (rank + 1) % size, (rank - 1) % size
        with comm.ledger.temporary(2 * buffers[0].nbytes):
            s0, s1 = bounds[send_chunk(rank, size, 0)]
            outgoing = flat[s0:s1]  # step 0: our own share of chunk rank-1 starts its chain
            for step in range(size - 1):
                r0, r1 = bounds[recv_chunk(rank, size, step)]
                incoming = buffers[step % 2][: r1 - r0]  # `outgoing` may be the other one
                got = comm.sendrecv(wire(outgoing), right, wire(incoming), left, TAG_REDUCE_SCATTER)
                if got != incoming.nbytes:
                    raise mismatch_error("ring_reduce_scatter", rank, left, got, incoming.nbytes)
                combine(ufunc, incoming, flat[r0:r1], incoming)  # x stays unchanged
                outgoing = incoming  # ...travels on to the right at the next step
        result = outgoing
    if op == "mean":
        np.divide(result, size, out=result)
    return result


def _allgather_inplace(comm, flat: np.ndarray, bounds) -> None:
    """Steps N-1..2N-3 of the ring schedule: chunk ``comm.rank`` of `flat` is filled in;
    on return every chunk is, each received straight into its place (no copies)."""
    rank, size = comm.rank, comm.size
    right, left = (rank + 1) % size, (rank - 1) % size
    for step in range(size - 1, 2 * (size - 1)):
        s0, s1 = bounds[send_chunk(rank, size, step)]
        r0, r1 = bounds[recv_chunk(rank, size, step)]
        incoming = flat[r0:r1]
        got = comm.sendrecv(wire(flat[s0:s1]), right, wire(incoming), left, TAG_ALLGATHER)
        if got != incoming.nbytes:
            raise mismatch_error("ring_allgather", rank, left, got, incoming.nbytes)


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
    _allgather_inplace(comm, flat, bounds)
    return result


@traced("ring_allreduce")
def ring_allreduce(comm, x: np.ndarray, op: str = "sum") -> np.ndarray:
    r"""All-reduce `x` in place by ring: reduce-scatter, then all-gather; returns `x`.

    .. math:: x \leftarrow \textstyle\sum_{i=0}^{N-1} x_i \quad(\text{op="mean": } /N)

    2(N-1) ``Sendrecv`` steps; each rank sends ``2*count - len(chunk r) - len(chunk r+1)``
    elements (= 2(N-1)/N of the buffer when N divides count) and receives ``2*count -
    len(chunk r-1) - len(chunk r)``. Any count (0 and < N included), any N. Every rank
    ends with bit-identical bytes, the same bytes as `RingAllreduce` (the non-blocking
    form, same `RingSteps`). Dtypes: float32, float64, int64, and float16 (summed in
    float16). Scratch: one receive buffer of one chunk (the longest), from the
    communicator's grow-only cache (`Communicator.take_scratch`), so a large ring does not
    fault a fresh buffer in on every call; `x` holds the partial sums.

    Shape:
        x: any shape, C-contiguous, writable, the same shape and dtype on every rank.
    """
    check_array(x, dtypes=RING_DTYPES)
    return _ring_allreduce(comm, x, op, check_op(op, x.dtype))


def _ring_allreduce(comm, x, op, ufunc):
    """`ring_allreduce` on arguments already checked (`allreduce` checks them once)."""
    rank, size = comm.rank, comm.size
    if size == 1:
        return x
    flat = x if x.ndim == 1 else x.reshape(-1)
    buffer = comm.take_scratch(ring_scratch_count(flat.size, size), flat.dtype)
    try:
        steps = ring_steps(flat, rank, size, op, ufunc, buffer)  # cached setup (ring_plan.py)
        right, left = (rank + 1) % size, (rank - 1) % size
        sendrecv, buffers, finish = comm.sendrecv, steps.buffers, steps.finish
        for step in range(steps.total):
            send, recv = buffers(step)
            tag = TAG_REDUCE_SCATTER if step < size - 1 else TAG_ALLGATHER
            got = sendrecv(send, right, recv, left, tag)
            if got != recv.nbytes:
                raise mismatch_error("ring_allreduce", rank, left, got, recv.nbytes)
            finish(step)
    finally:
        comm.return_scratch(buffer)
    return x
