"""Ring collectives: reduce-scatter, all-gather, and all-reduce = the two in a row.

The N ranks form a ring; every step each rank sends one chunk to its right neighbour and
receives one from its left (one ``Sendrecv``), so every link carries data at every step
and each rank moves about 2(N-1)/N of the buffer in all, whatever N.

Chunk layout: the flattened buffer of `count` elements is cut as ``np.array_split`` does,
into N chunks, the first ``count % N`` of them one element longer. **Rank r ends the
reduce-scatter holding the reduced chunk r** and contributes chunk r to the all-gather.
Chunks may be empty (count < N); empty messages are still sent, so the message count is
always 2(N-1) for an all-reduce (see counts.py).

Bit-identical results: chunk c is reduced along a single chain, starting at rank c+1 and
ending at rank c, each step adding (partial from the left) + (own contribution); only rank
c holds the final value, and the all-gather copies it byte for byte to everyone.
"""
from __future__ import annotations

import numpy as np

from .checks import chunk_bounds, check_array, check_op, mismatch_error

TAG_REDUCE_SCATTER = 30_100
TAG_ALLGATHER = 30_101


def _reduce_scatter(comm, flat: np.ndarray, ufunc, bounds, buffers, inplace: bool) -> np.ndarray:
    """The ring reduce-scatter loop on a flat array. Returns the array holding this rank's
    reduced chunk (chunk ``comm.rank``).

    ``inplace=True``: partial sums accumulate in `flat` itself (one receive buffer), and
    the result is ``flat``'s chunk. ``inplace=False``: `flat` is left unchanged; partial
    sums live in the two receive `buffers`, used in turn, and the result is a view of one
    of them. Either way step s adds (partial from the left) + (our own part), so both
    give the same bits."""
    rank, size = comm.rank, comm.size
    right, left = (rank + 1) % size, (rank - 1) % size
    start, stop = bounds[(rank - 1) % size]
    outgoing = flat[start:stop]  # step 0: our own share of chunk rank-1 starts its chain
    for step in range(size - 1):
        start, stop = bounds[(rank - step - 2) % size]  # the chunk whose partial arrives now
        incoming = buffers[step % len(buffers)][: stop - start]
        got = comm.sendrecv(outgoing, right, incoming, left, TAG_REDUCE_SCATTER)
        if got != incoming.nbytes:
            raise mismatch_error("ring_reduce_scatter", rank, left, got, incoming.nbytes)
        mine = flat[start:stop]
        if inplace:
            ufunc(mine, incoming, out=mine)
            outgoing = mine  # ...travels on to the right at the next step
        else:
            ufunc(incoming, mine, out=incoming)
            outgoing = incoming
    return outgoing


def _allgather_inplace(comm, flat: np.ndarray, bounds) -> None:
    """The ring all-gather loop: chunk ``comm.rank`` of `flat` is filled in; on return
    every chunk is. Step s sends chunk rank-s to the right and receives chunk rank-s-1
    from the left straight into its place (no copies)."""
    rank, size = comm.rank, comm.size
    right, left = (rank + 1) % size, (rank - 1) % size
    for step in range(size - 1):
        s0, s1 = bounds[(rank - step) % size]
        r0, r1 = bounds[(rank - step - 1) % size]
        incoming = flat[r0:r1]
        got = comm.sendrecv(flat[s0:s1], right, incoming, left, TAG_ALLGATHER)
        if got != incoming.nbytes:
            raise mismatch_error("ring_allgather", rank, left, got, incoming.nbytes)


def _receive_buffers(comm, count: int, dtype, n: int):
    """`n` receive buffers of one (longest) chunk each, and their bytes in all."""
    longest = -(-count // comm.size)
    return tuple(np.empty(longest, dtype) for _ in range(n)), n * longest * np.dtype(dtype).itemsize


def ring_reduce_scatter(comm, x: np.ndarray, op: str = "sum") -> np.ndarray:
    r"""Reduce `x` over all ranks and return this rank's share of the result.

    .. math:: \text{out}_r = \big(\textstyle\sum_{i} x_i.\text{ravel}()\big)[\text{chunk } r]

    (``op="mean"`` divides by N and needs a floating dtype: TypeError for int64; "max"
    and "min" are elementwise.) Chunk r is the r-th
    piece of ``np.array_split(x.ravel(), N)``. `x` is not modified; the result is a new
    array. N-1 ``Sendrecv`` steps; scratch: two receive buffers of one chunk each.

    Shape:
        x: any shape, ``count = x.size`` elements, the same on every rank.
        output: ``(count // N + (r < count % N),)``, 1-D.
    """
    check_array(x, writable=False)
    ufunc = check_op(op, x.dtype)
    flat = x.reshape(-1)
    bounds = chunk_bounds(flat.size, comm.size)
    if comm.size == 1:
        result = flat.copy()
    else:
        buffers, scratch = _receive_buffers(comm, flat.size, x.dtype, 2)
        with comm.ledger.temporary(scratch):
            result = _reduce_scatter(comm, flat, ufunc, bounds, buffers, inplace=False)
    if op == "mean":
        np.divide(result, comm.size, out=result)
    return result


def ring_allgather(comm, chunk: np.ndarray, out: np.ndarray | None = None,
                   count: int | None = None) -> np.ndarray:
    """Every rank's chunk, concatenated in rank order, on every rank: the inverse of
    `ring_reduce_scatter`'s layout.

    Rank r passes chunk r of ``np.array_split`` of a `count`-element array (its
    ``chunk.size`` must be ``count // N + (r < count % N)``). The total `count` is
    ``out.size`` if `out` is given, else `count`, else ``N * chunk.size`` (equal chunks).
    N-1 ``Sendrecv`` steps, received straight into the output.

    Shape:
        chunk: any shape, flattened; output: `out` (returned) if given, else ``(count,)``.
    """
    check_array(chunk, "chunk", writable=False)
    size, rank = comm.size, comm.rank
    if out is not None:
        check_array(out, "out")
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


def ring_allreduce(comm, x: np.ndarray, op: str = "sum") -> np.ndarray:
    r"""All-reduce `x` in place by ring: reduce-scatter, then all-gather; returns `x`.

    .. math:: x \leftarrow \textstyle\sum_{i=0}^{N-1} x_i \quad(\text{op="mean": } /N)

    2(N-1) ``Sendrecv`` steps; each rank sends ``2*count - len(chunk r) - len(chunk r+1)``
    elements (= 2(N-1)/N of the buffer when N divides count) and receives ``2*count -
    len(chunk r-1) - len(chunk r)``. Any count (0 and < N included), any N. Every rank ends with bit-identical bytes.
    Scratch: one receive buffer of one chunk; `x` holds the partial sums.

    Shape:
        x: any shape, C-contiguous, writable, the same shape and dtype on every rank.
    """
    check_array(x)
    ufunc = check_op(op, x.dtype)
    size = comm.size
    flat = x.reshape(-1)
    if size == 1:
        return x
    bounds = chunk_bounds(flat.size, size)
    buffers, scratch = _receive_buffers(comm, flat.size, x.dtype, 1)
    with comm.ledger.temporary(scratch):
        reduced = _reduce_scatter(comm, flat, ufunc, bounds, buffers, inplace=True)
    if op == "mean":  # our chunk is final here and only here: divide once, then share it
        np.divide(reduced, size, out=reduced)
    _allgather_inplace(comm, flat, bounds)
    return x
