"""All-reduce by recursive doubling and by Rabenseifner's algorithm, the `allreduce`
dispatcher, and `mpi_allreduce` (the MPI library's own, as the reference).

Both need a power-of-two number of ranks; for other N they do what MPICH does: the first
2*(N - p) ranks fold pairwise into p = 2**floor(log2 N) ranks, which run the algorithm,
and fold back out at the end. Recursive doubling exchanges the whole buffer log2(p)
times (latency-optimal); Rabenseifner halves, then doubles (about 2(p-1)/p of the buffer,
like the ring). Every rank ends with identical bits. Details: docs/comm.md. A repeated
`allreduce` call skips the checks it passed before (`_known_call`), and a small recursive
doubling on a power-of-two N then runs on persistent requests (latency.py).
"""
from __future__ import annotations

from time import perf_counter

import numpy as np

from . import auto
from .auto import choose_allreduce_algorithm
from .checks import check_array, check_choice, check_op, chunk_starts, mismatch_error
from .ledger import MPI_CALL
from .ring import _ring_allreduce
from .tags import TAG_ALLREDUCE
from .timeline import traced

ALLREDUCE_ALGORITHMS = ("auto", "ring", "recursive_doubling", "rabenseifner", "mpi")
_MPI_OPS = {"sum": "SUM", "mean": "SUM", "max": "MAX", "min": "MIN"}  # names in mpi4py.MPI


def _exchange(comm, sendbuf, partner, recvbuf, what):
    got = comm.sendrecv(sendbuf, partner, recvbuf, partner, TAG_ALLREDUCE)
    if got != recvbuf.nbytes:
        raise mismatch_error(what, comm.rank, partner, got, recvbuf.nbytes)


def _fold_in(comm, flat, ufunc, incoming, what) -> tuple[int, int, int]:
    """Fold N ranks down to p = 2**floor(log2 N). Returns (p, rem, new rank), the new
    rank being -1 for an even rank below 2*rem, which sits out until `_fold_out`."""
    rank, size = comm.rank, comm.size
    p = 1 << (size.bit_length() - 1)
    rem = size - p
    if rank >= 2 * rem:
        return p, rem, rank - rem
    if rank % 2 == 0:
        comm.send(flat, rank + 1, TAG_ALLREDUCE)
        return p, rem, -1
    got = comm.recv(incoming, rank - 1, TAG_ALLREDUCE)
    if got != incoming.nbytes:
        raise mismatch_error(what, rank, rank - 1, got, incoming.nbytes)
    ufunc(flat, incoming, out=flat)
    return p, rem, rank // 2


def _fold_out(comm, flat, rem, newrank, what) -> None:
    """Odd ranks below 2*rem hand the result back to the even rank that sat out."""
    if comm.rank >= 2 * rem:
        return
    if newrank < 0:
        got = comm.recv(flat, comm.rank + 1, TAG_ALLREDUCE)
        if got != flat.nbytes:
            raise mismatch_error(what, comm.rank, comm.rank + 1, got, flat.nbytes)
    else:
        comm.send(flat, comm.rank - 1, TAG_ALLREDUCE)


def _real_rank(newrank: int, rem: int) -> int:
    return 2 * newrank + 1 if newrank < rem else newrank + rem


@traced("recursive_doubling_allreduce")
def recursive_doubling_allreduce(comm, x: np.ndarray, op: str = "sum") -> np.ndarray:
    r"""All-reduce `x` in place by recursive doubling; returns `x`.

    .. math:: x \leftarrow \textstyle\sum_i x_i \quad(\text{op="mean": } /N)

    log2(p) rounds of whole-buffer ``Sendrecv`` (+2 rounds when N is not a power of two,
    see the module docstring). Scratch: one buffer the size of `x` (from the
    communicator's cache, `Communicator.take_scratch`).

    Shape:
        x: any shape, C-contiguous, writable, the same shape and dtype on every rank.
    """
    check_array(x)
    ufunc = check_op(op, x.dtype)
    with comm.collective("recursive_doubling_allreduce", x, op=op):
        return _recursive_doubling(comm, x, op, ufunc)


def _recursive_doubling(comm, x, op, ufunc):
    """`recursive_doubling_allreduce` on arguments already checked (by the caller). A
    repeated small call of `allreduce` runs `latency.latency_allreduce` instead: the same
    exchanges on a power-of-two N, on persistent requests."""
    if comm.size == 1:
        return x
    what = "recursive_doubling_allreduce"
    flat = x if x.ndim == 1 else x.reshape(-1)
    incoming = comm.take_scratch(flat.size, flat.dtype)
    try:
        p, rem, newrank = _fold_in(comm, flat, ufunc, incoming, what)
        if newrank >= 0:
            mask = 1
            while mask < p:  # round k: swap whole partial sums with the rank 2**k away
                partner = _real_rank(newrank ^ mask, rem)
                _exchange(comm, flat, partner, incoming, what)
                ufunc(flat, incoming, out=flat)
                mask <<= 1
            if op == "mean":
                np.divide(flat, comm.size, out=flat)
        _fold_out(comm, flat, rem, newrank, what)
    finally:
        comm.return_scratch(incoming)
    return x


@traced("rabenseifner_allreduce")
def rabenseifner_allreduce(comm, x: np.ndarray, op: str = "sum") -> np.ndarray:
    r"""All-reduce `x` in place by Rabenseifner's algorithm; returns `x`.

    .. math:: x \leftarrow \textstyle\sum_i x_i \quad(\text{op="mean": } /N)

    Reduce-scatter by recursive halving, then all-gather by recursive doubling (module
    docstring): 2*log2(p) rounds (+2 when N is not a power of two), each rank sends and
    receives ``count - len(piece v) + sum of its kept ranges`` elements (2(p-1)/p of the
    buffer when p divides count). Scratch: half the buffer (the whole buffer on a rank
    that receives a fold-in).

    Shape:
        x: any shape, C-contiguous, writable, the same shape and dtype on every rank.
    """
    check_array(x)
    ufunc = check_op(op, x.dtype)
    with comm.collective("rabenseifner_allreduce", x, op=op):
        return _rabenseifner(comm, x, op, ufunc)


def _rabenseifner(comm, x, op, ufunc):
    """`rabenseifner_allreduce` on arguments already checked."""
    if comm.size == 1:
        return x
    what = "rabenseifner_allreduce"
    rank, size = comm.rank, comm.size
    flat = x if x.ndim == 1 else x.reshape(-1)
    p = 1 << (size.bit_length() - 1)
    starts = chunk_starts(flat.size, p)
    folds_in = rank < 2 * (size - p) and rank % 2 == 1
    longest = flat.size if folds_in else max(starts[p // 2], flat.size - starts[p // 2])
    incoming = comm.take_scratch(longest, flat.dtype)
    try:
        p, rem, newrank = _fold_in(comm, flat, ufunc, incoming[: flat.size if folds_in else 0], what)
        if newrank >= 0:
            lo, hi, steps = 0, p, []
            mask = p // 2
            while mask:  # recursive halving: keep one half of [lo, hi), send the other
                partner, mid = _real_rank(newrank ^ mask, rem), (lo + hi) // 2
                keep, give = ((lo, mid), (mid, hi)) if (newrank & mask) == 0 else ((mid, hi), (lo, mid))
                k0, k1, g0, g1 = starts[keep[0]], starts[keep[1]], starts[give[0]], starts[give[1]]
                _exchange(comm, flat[g0:g1], partner, incoming[: k1 - k0], what)
                ufunc(flat[k0:k1], incoming[: k1 - k0], out=flat[k0:k1])
                steps.append((partner, k0, k1, g0, g1))
                lo, hi = keep
                mask //= 2
            if op == "mean":  # piece `newrank` is final here and only here
                piece = flat[starts[newrank]:starts[newrank + 1]]
                np.divide(piece, size, out=piece)
            for partner, k0, k1, g0, g1 in reversed(steps):  # recursive doubling all-gather
                _exchange(comm, flat[k0:k1], partner, flat[g0:g1], what)
        _fold_out(comm, flat, rem, newrank, what)
    finally:
        comm.return_scratch(incoming)
    return x


@traced("mpi_allreduce")
def mpi_allreduce(comm, x: np.ndarray, op: str = "sum") -> np.ndarray:
    """The MPI library's own ``MPI_Allreduce`` on `x`, in place; returns `x`. The
    reference our algorithms are compared against, never used by the strategies. The
    ledger records it as one ``"mpi"`` entry (its seconds; no messages of ours)."""
    check_array(x)
    ufunc = check_op(op, x.dtype)
    with comm.collective("mpi_allreduce", x, op=op):
        return _mpi(comm, x, op, ufunc)


def _mpi(comm, x, op, ufunc):
    from mpi4py import MPI  # here, not at import: the cost model reads this package without MPI

    t0 = perf_counter()
    comm.mpi.Allreduce(MPI.IN_PLACE, x, getattr(MPI, _MPI_OPS[op]))
    comm.ledger.record(comm.current_phase, None, MPI_CALL, x.nbytes, perf_counter() - t0)
    if op == "mean":
        np.divide(x, comm.size, out=x)
    return x


_IMPLEMENTATIONS = {"ring": _ring_allreduce, "recursive_doubling": _recursive_doubling,
                    "rabenseifner": _rabenseifner, "mpi": _mpi}


def allreduce(comm, x: np.ndarray, op: str = "sum", algorithm: str = "auto") -> np.ndarray:
    """All-reduce `x` in place with the named algorithm ("auto": see
    `minidist.comm.auto`); returns `x`. Checks its arguments once and calls the
    algorithm's unchecked body (same results, messages and scratch as calling it by name).

    Shape:
        x: any shape, C-contiguous, writable, float32 / float64 / int64, the same shape and
        dtype on every rank.
    """
    known = _known_call(comm, x, op, algorithm)
    if known is None:
        return _checked_allreduce(comm, x, op, algorithm)
    run, ufunc = known
    comm.calls += 1  # what `comm.collective` does when no timeline records and debug is off
    comm.operation = "allreduce"
    try:
        return run(comm, x, op, ufunc)
    finally:
        comm.operation = None


# (dtype, nbytes, op, algorithm, N, auto table version) -> (body, ufunc) of a call that
# passed every check; a later one needs only the checks on the array itself
_KNOWN: dict = {}
# recursive doubling up to this size may take `latency.py`'s body: its gain at N = 2 fell
# from 1.3 us at 4 KiB to 0.9 at 16 KiB and nothing at 64 KiB (the copy into its buffer)
LATENCY_BYTES = 32 << 10


def _known_call(comm, x, op, algorithm):
    """The fast path's one gate: ``(body, ufunc)`` for a call like one that passed every
    check before, on a writable C-contiguous array, outside any other collective, with no
    timeline recording and debug mode off; else None (the full path: checks, call scope,
    tracing). It took a call at N = 2, 4 KiB from 6.7 to 5.7 us (MPI_Allreduce: 3.9 us)."""
    if comm.timeline is not None or comm.debug or comm.operation is not None or type(x) is not np.ndarray:
        return None
    flags = x.flags
    if not (flags.c_contiguous and flags.writeable):
        return None
    try:
        return _KNOWN.get((x.dtype, x.nbytes, op, algorithm, comm.size, auto.table_version))
    except TypeError:  # an unhashable op or algorithm: the full path names what is wrong
        return None


def forget_known_calls() -> None:
    """Empty `_known_call`'s memory: the next call of each kind takes the full path (the
    tests compare both paths this way)."""
    _KNOWN.clear()


@traced("allreduce")
def _checked_allreduce(comm, x, op, algorithm):
    """`allreduce` with every check, in its call scope (traced when a timeline records)."""
    if algorithm not in ALLREDUCE_ALGORITHMS:
        check_choice("algorithm", algorithm, ALLREDUCE_ALGORITHMS)
    check_array(x)
    ufunc = check_op(op, x.dtype)
    chosen = choose_allreduce_algorithm(x.nbytes, comm.size) if algorithm == "auto" else algorithm
    _remember(comm, x, op, algorithm, chosen, ufunc)
    with comm.collective("allreduce", x, op=op, algorithm=chosen):
        return _IMPLEMENTATIONS[chosen](comm, x, op, ufunc)


def _remember(comm, x, op, algorithm, chosen, ufunc) -> None:
    """Note a call that passed every check for `_known_call`, with the body it runs:
    `latency.latency_allreduce` for a small recursive doubling on a power-of-two N."""
    body, size = _IMPLEMENTATIONS[chosen], comm.size
    if chosen == "recursive_doubling" and size > 1 and size & (size - 1) == 0 and x.nbytes <= LATENCY_BYTES:
        from .latency import latency_allreduce  # here: it needs MPI, this module does not
        body = latency_allreduce
    if len(_KNOWN) >= 4096:  # a program of ever-new sizes: start over
        _KNOWN.clear()
    _KNOWN[x.dtype, x.nbytes, op, algorithm, size, auto.table_version] = body, ufunc
