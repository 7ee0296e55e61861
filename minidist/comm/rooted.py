"""Rooted collectives: gather, reduce, broadcast, scatter.

Each has a root rank that collects or distributes. "linear" algorithms talk to the root
directly (N-1 messages through the root, N-1 rounds); "binomial" ones use a binomial tree
over the ranks renumbered relative to the root, ``v = (rank - root) % N``: ceil(log2 N)
rounds, and no rank sends or receives more than ceil(log2 N) messages.

Binomial tree: rank v's parent is v with its lowest set bit cleared; its children are
``v + 2**k`` for every ``2**k`` below v's lowest set bit (every k, for the root) with
``v + 2**k < N``. Broadcast flows from parent to children (largest subtree first, as in
MPICH); reduce flows back up.
"""
from __future__ import annotations

import numpy as np

from .tags import TAG_BCAST, TAG_GATHER, TAG_REDUCE, TAG_SCATTER
from .checks import (SUPPORTED_DTYPES, check_array, check_choice, check_op, check_root,
                     chunk_bounds, mismatch_error)
from .timeline import traced

ROOTED_ALGORITHMS = ("linear", "binomial")
HEADER_LEN = 10  # scatter header: [dtype index, ndim, up to 8 dims] as int64
HEADER_BYTES = HEADER_LEN * 8
_ERROR = -1  # dtype index the root sends when its own arguments were wrong


def _recv_exact(comm, buf, source, tag, what):
    got = comm.recv(buf, source, tag)
    if got != buf.nbytes:
        raise mismatch_error(what, comm.rank, source, got, buf.nbytes)


@traced("gather_to_root")
def gather_to_root(comm, x: np.ndarray, root: int = 0, out: np.ndarray | None = None,
                   sum_rows: bool = False):
    """Every rank's `x`, stacked in rank order, on the root; None on the other ranks.

    Linear: each non-root sends `x` once; the root receives N-1 messages, in rank order,
    straight into the output: `out` when given (the root's, reused step after step; `x`
    may be its row ``root``), else a new array. `x` is not modified. ``sum_rows=True``
    (dp's reduction): the root then adds every other row into row ``root``, in rank
    order, inside this call, so its time counts as the collective's, as a reduce's does.

    Shape:
        x: any shape, the same on every rank. output (root): ``(N, *x.shape)``.
    """
    check_array(x, writable=False)
    root = check_root(root, comm.size)
    if out is not None and comm.rank == root:
        check_array(out, "out")
        if out.shape != (comm.size, *x.shape) or out.dtype != x.dtype:
            raise ValueError(f"gather_to_root: out has shape {out.shape} and dtype {out.dtype}; it "
                             f"must be {(comm.size, *x.shape)} and {x.dtype}")
    with comm.collective("gather_to_root", x, root=root):
        gathered = _gather(comm, x, root, out)
        if sum_rows and gathered is not None:
            rows = gathered.reshape(comm.size, x.size)
            for source in range(comm.size):
                if source != root:
                    np.add(rows[root], rows[source], out=rows[root])
        return gathered


def _gather(comm, x, root, out=None):
    if comm.rank != root:
        comm.send(x, root, TAG_GATHER)
        return None
    out = np.empty((comm.size, *x.shape), x.dtype) if out is None else out
    rows = out.reshape(comm.size, x.size)  # one writable 1-D view per rank, even for 0-d x
    if not np.shares_memory(rows[root], x):
        rows[root] = x.reshape(-1)
    for source in range(comm.size):
        if source != root:
            _recv_exact(comm, rows[source], source, TAG_GATHER, "gather_to_root")
    return out


@traced("reduce_to_root")
def reduce_to_root(comm, x: np.ndarray, root: int = 0, op: str = "sum",
                   algorithm: str = "linear"):
    r"""The reduction of every rank's `x` on the root; None on the other ranks.

    .. math:: \text{out} = x_0 \oplus x_1 \oplus \dots \oplus x_{N-1}
              \quad(\text{op="mean": sum} / N)

    `x` is never modified; the root gets a new array. "linear": every non-root sends `x`
    to the root, which adds the contributions in rank order (``((x_0 + x_1) + x_2) ...``).
    "binomial": partial sums flow up the binomial tree (rank v adds its children's
    subtrees in the order v+1, v+2, v+4, ...), ceil(log2 N) rounds. The two algorithms may
    round differently; each is deterministic.

    Shape:
        x: any shape, the same on every rank. output (root): ``x.shape``.
    """
    check_array(x, writable=False)
    root = check_root(root, comm.size)
    ufunc = check_op(op, x.dtype)
    check_choice("algorithm", algorithm, ROOTED_ALGORITHMS)
    with comm.collective("reduce_to_root", x, op=op, root=root, algorithm=algorithm):
        if algorithm == "linear":
            result = _reduce_linear(comm, x, root, ufunc)
        else:
            result = _reduce_binomial(comm, x, root, ufunc)
    if result is not None and op == "mean":
        np.divide(result, comm.size, out=result)
    return result


def _reduce_linear(comm, x, root, ufunc):
    if comm.rank != root:
        comm.send(x, root, TAG_REDUCE)
        return None
    result = np.empty_like(x)
    if comm.size == 1:  # alone: nothing to receive
        result[...] = x
        return result
    incoming = comm.take_scratch(x.size, x.dtype)  # cached between calls (communicator.py)
    try:
        shaped = incoming.reshape(x.shape)
        for source in range(comm.size):
            if source == root:
                part = x
            else:
                _recv_exact(comm, incoming, source, TAG_REDUCE, "reduce_to_root")
                part = shaped
            if source == 0:
                result[...] = part
            else:
                ufunc(result, part, out=result)
    finally:
        comm.return_scratch(incoming)
    return result


def _reduce_binomial(comm, x, root, ufunc):
    size, v = comm.size, (comm.rank - root) % comm.size
    if not (v % 2 == 0 and v + 1 < size):  # a leaf (odd v, or the last rank): send x as is
        if v != 0:
            comm.send(x, (comm.rank - (v & -v)) % size, TAG_REDUCE)
            return None
        return x.copy()  # the root alone (N = 1)
    # an inner node: a receive buffer, and (off the root) the partial sum, both scratch
    # from the communicator's cache; the root's partial sum is the output
    taken = [comm.take_scratch(x.size, x.dtype)]
    try:
        incoming = taken[0].reshape(x.shape)
        acc = x  # copied on the first child's arrival, so x itself is never written
        mask = 1
        while mask < size:
            if v & mask:  # our subtree is complete: hand it to the parent, done
                comm.send(acc, (comm.rank - mask) % size, TAG_REDUCE)
                return None
            if v + mask < size:
                _recv_exact(comm, incoming, (comm.rank + mask) % size, TAG_REDUCE, "reduce_to_root")
                if acc is x:
                    if v == 0:
                        acc = x.copy()
                    else:
                        taken.append(comm.take_scratch(x.size, x.dtype))
                        acc = taken[1].reshape(x.shape)
                        acc[...] = x
                ufunc(acc, incoming, out=acc)
            mask <<= 1
        return acc  # only the root gets here (its acc is a fresh array: it has a child)
    finally:
        for array in taken:
            comm.return_scratch(array)


@traced("broadcast")
def broadcast(comm, x: np.ndarray, root: int = 0, algorithm: str = "linear") -> np.ndarray:
    """Copy the root's `x` into `x` on every rank, in place; returns `x`.

    "linear": the root sends `x` to every other rank in rank order (N-1 messages out of
    the root, N-1 rounds). "binomial": down the binomial tree, ceil(log2 N) rounds; rank
    v receives once from its parent, then sends to its children, largest subtree first.

    Shape:
        x: any shape, C-contiguous and writable, the same shape and dtype on every rank.
    """
    check_array(x)
    root = check_root(root, comm.size)
    check_choice("algorithm", algorithm, ROOTED_ALGORITHMS)
    with comm.collective("broadcast", x, root=root, algorithm=algorithm):
        return _broadcast(comm, x, root, algorithm)


def _broadcast(comm, x, root, algorithm):
    rank, size = comm.rank, comm.size
    if algorithm == "linear":
        if rank == root:
            for dest in range(size):
                if dest != root:
                    comm.send(x, dest, TAG_BCAST)
        else:
            _recv_exact(comm, x, root, TAG_BCAST, "broadcast")
        return x
    v = (rank - root) % size
    mask = 1
    while mask < size:  # receive from the parent: v minus its lowest set bit
        if v & mask:
            _recv_exact(comm, x, (rank - mask) % size, TAG_BCAST, "broadcast")
            break
        mask <<= 1
    mask >>= 1
    while mask > 0:  # send to the children v + mask, for every mask below that bit
        if v + mask < size:
            comm.send(x, (rank + mask) % size, TAG_BCAST)
        mask >>= 1
    return x


@traced("scatter")
def scatter(comm, x, root: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Split the root's `x` along axis 0 as ``np.array_split(x, N)`` does and give piece r
    to rank r (the first ``len(x) % N`` pieces have one more row).

    Non-roots pass anything as `x` (None is fine) and learn their piece's shape and dtype
    from a small header the root sends first (HEADER_BYTES = 80 bytes: dtype, ndim, dims),
    so uneven batch shards need no extra arguments: 2 messages per non-root, counted in
    the ledger. With `out` (its shape must match the piece), the piece is received into
    it and `out` is returned; else a new array is (the root's own piece is a copy).
    If the root's arguments are wrong, it raises and the other ranks raise too.

    Shape:
        x (root): ``(n, *rest)``, ndim 1..8. output on rank r: ``(n // N + (r < n % N), *rest)``.
    """
    root = check_root(root, comm.size)
    with comm.collective("scatter", x if comm.rank == root else None, root=root):
        if comm.rank == root:
            return _scatter_from_root(comm, x, root, out)
        return _scatter_to(comm, root, out)


def _scatter_to(comm, root, out):
    problem = None
    if out is not None:
        try:
            check_array(out, "out")
        except (TypeError, ValueError) as exc:
            problem = exc
    header = np.empty(HEADER_LEN, np.int64)
    _recv_exact(comm, header, root, TAG_SCATTER, "scatter header")
    if header[0] == _ERROR:
        raise ValueError(f"scatter: the root (rank {root}) rejected its arguments; see its error")
    dtype, shape = SUPPORTED_DTYPES[header[0]], tuple(int(d) for d in header[2:2 + header[1]])
    if problem is None and out is not None and (out.shape != shape or out.dtype != dtype):
        problem = ValueError(f"scatter: out has shape {out.shape} and dtype {out.dtype}, but rank "
                             f"{comm.rank}'s piece has shape {shape} and dtype {dtype}")
    if problem is not None:  # take the piece anyway, so the root is not left sending
        _recv_exact(comm, np.empty(shape, dtype), root, TAG_SCATTER, "scatter")
        raise problem
    piece = np.empty(shape, dtype) if out is None else out
    _recv_exact(comm, piece, root, TAG_SCATTER, "scatter")
    return piece


def _scatter_from_root(comm, x, root, out):
    try:
        check_array(x, writable=False)
        if not 1 <= x.ndim <= HEADER_LEN - 2:
            raise ValueError(f"scatter needs x with 1 to {HEADER_LEN - 2} dimensions "
                             f"(got {x.ndim}D input of shape {x.shape})")
        bounds = chunk_bounds(x.shape[0], comm.size)
        start, stop = bounds[root]
        if out is not None:
            check_array(out, "out")
            if out.shape != x[start:stop].shape or out.dtype != x.dtype:
                raise ValueError(f"scatter: out has shape {out.shape} and dtype {out.dtype}, but the "
                                 f"root's piece has shape {x[start:stop].shape} and dtype {x.dtype}")
    except (TypeError, ValueError):
        failed = np.full(HEADER_LEN, _ERROR, np.int64)
        for dest in range(comm.size):  # tell the others, so nobody waits for a piece
            if dest != root:
                comm.send(failed, dest, TAG_SCATTER)
        raise
    header = np.zeros(HEADER_LEN, np.int64)
    header[0] = SUPPORTED_DTYPES.index(x.dtype)
    header[1] = x.ndim
    header[3:2 + x.ndim] = x.shape[1:]
    for dest in range(comm.size):
        if dest != root:
            d0, d1 = bounds[dest]
            header[2] = d1 - d0
            comm.send(header, dest, TAG_SCATTER)
            comm.send(x[d0:d1], dest, TAG_SCATTER)
    if out is None:
        return x[start:stop].copy()
    out[...] = x[start:stop]
    return out
