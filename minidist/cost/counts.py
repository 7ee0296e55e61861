"""Closed-form per-rank message counts of every collective, AS IMPLEMENTED here.

`message_counts` gives what one rank sends and receives; `rounds` the number of
sequential message steps on the critical path (the latency terms of a cost model). The
multi-rank tests check every collective's ledger against these formulas, rank by rank.

Conventions. N = size; ``cs(i) = count // N + (i < count % N)`` is the length of chunk i
in np.array_split's layout; ``ceil_log2(n)`` = ceil(log2 n). Empty chunks are still sent
as 0-byte messages, so message counts never depend on `count`. Bytes are ``elements *
itemsize``.

* ring_reduce_scatter: N-1 messages each way; rank r sends every chunk but r, and
  receives every chunk but r-1: ``sent = count - cs(r)``, ``received = count - cs(r-1)``.
* ring_allgather: N-1 each way; sends every chunk but r+1, receives every chunk but r.
* ring_allreduce: the two: 2(N-1) messages each way, ``sent = 2*count - cs(r) -
  cs(r+1)``, ``received = 2*count - cs(r-1) - cs(r)``; = 2(N-1)/N * count when N | count.
* gather_to_root, reduce_to_root "linear": each non-root sends its buffer once; the root
  receives N-1 buffers.
* broadcast "linear": the root sends N-1 buffers; each other rank receives one.
* reduce_to_root / broadcast "binomial" (v = (r - root) % N, tz = trailing zeros):
  children(v) = ceil_log2(N) for the root, else min(tz(v), ceil_log2(N - v)); broadcast
  receives 1 (non-roots) and sends children(v) buffers; reduce the reverse.
* scatter (count = rows of x, itemsize = bytes per row): the root sends 2(N-1) messages,
  a header of HEADER_BYTES and the piece, to each other rank: ``(N-1)*HEADER_BYTES +
  (count - cs(root))*itemsize`` bytes; rank r receives ``HEADER_BYTES + cs(r)*itemsize``.
* recursive_doubling_allreduce (p = 2**floor(log2 N), rem = N - p, L = log2 p): whole
  buffers; even ranks below 2*rem send 1, receive 1; odd ranks below 2*rem L+1 each way;
  the others L each way.
* rabenseifner_allreduce: the same fold-in/out of whole buffers; an active rank with new
  number v (pieces: array_split of count over p) sends ``count - piece(v) + K(v)`` and
  receives as much, in 2L messages each way, where K(v) = sum over k = 1..L of the
  elements of the aligned block of p/2**k pieces that contains piece v (its kept ranges).
* barrier: ceil_log2(N) empty messages each way.
"""
from __future__ import annotations

from ..comm.auto import choose_allreduce_algorithm
from ..comm.checks import chunk_size, chunk_starts
from ..comm.rooted import HEADER_BYTES, ROOTED_ALGORITHMS

COUNTED_COLLECTIVES = ("ring_allreduce", "ring_reduce_scatter", "ring_allgather", "gather_to_root",
               "reduce_to_root", "broadcast", "scatter", "recursive_doubling_allreduce",
               "rabenseifner_allreduce", "barrier", "allreduce")
_ALLREDUCE_BY_ALGORITHM = {"ring": "ring_allreduce", "recursive_doubling": "recursive_doubling_allreduce",
                           "rabenseifner": "rabenseifner_allreduce"}


def ceil_log2(n: int) -> int:
    """ceil(log2 n) for n >= 1 (0 for n = 1)."""
    return (n - 1).bit_length()


def _trailing_zeros(v: int) -> int:
    return (v & -v).bit_length() - 1


def binomial_children(v: int, size: int) -> int:
    """Number of children of relative rank v in the binomial tree over `size` ranks."""
    if v == 0:
        return ceil_log2(size)
    return min(_trailing_zeros(v), ceil_log2(size - v))


def _counts(ms, mr, es, er, itemsize) -> dict:
    return {"messages_sent": ms, "messages_received": mr,
            "bytes_sent": es * itemsize, "bytes_received": er * itemsize}


def _check_args(collective, size, rank, count, itemsize, root):
    if collective not in COUNTED_COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}; expected one of {list(COUNTED_COLLECTIVES)}")
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"need size >= 1 and 0 <= rank < size (got size={size}, rank={rank})")
    if count < 0 or itemsize < 0:
        raise ValueError(f"count and itemsize must be >= 0 (got count={count}, itemsize={itemsize})")
    if not 0 <= root < size:
        raise ValueError(f"root={root} is outside [0, {size})")


def _rooted_algorithm(collective, algorithm):
    algorithm = "linear" if algorithm is None else algorithm
    if algorithm not in ROOTED_ALGORITHMS:
        raise ValueError(f"{collective} has algorithms {list(ROOTED_ALGORITHMS)} (got {algorithm!r})")
    return algorithm


def _allreduce_name(count, itemsize, size, algorithm):
    if algorithm in (None, "auto"):
        algorithm = choose_allreduce_algorithm(count * itemsize, size)
    if algorithm not in _ALLREDUCE_BY_ALGORITHM:
        raise ValueError(f"no closed form for allreduce algorithm {algorithm!r}; expected one of "
                         f"{list(_ALLREDUCE_BY_ALGORITHM)} or 'auto' (the 'mpi' one is MPI's own)")
    return _ALLREDUCE_BY_ALGORITHM[algorithm]


def message_counts(collective: str, size: int, rank: int, count: int, itemsize: int,
                   root: int = 0, algorithm: str | None = None) -> dict:
    """``{messages_sent, messages_received, bytes_sent, bytes_received}`` of `rank` in
    `collective` over `size` ranks, for a buffer of `count` elements of `itemsize` bytes
    (see the module docstring for each formula). `algorithm`: "linear" (default) or
    "binomial" for reduce_to_root and broadcast; for collective="allreduce" one of
    "ring", "recursive_doubling", "rabenseifner" or "auto"/None."""
    _check_args(collective, size, rank, count, itemsize, root)
    if collective == "allreduce":
        collective = _allreduce_name(count, itemsize, size, algorithm)
    N, r = size, rank
    if N == 1:
        return _counts(0, 0, 0, 0, itemsize)

    def cs(i):
        return chunk_size(count, N, i % N)

    if collective == "ring_reduce_scatter":
        return _counts(N - 1, N - 1, count - cs(r), count - cs(r - 1), itemsize)
    if collective == "ring_allgather":
        return _counts(N - 1, N - 1, count - cs(r + 1), count - cs(r), itemsize)
    if collective == "ring_allreduce":
        return _counts(2 * (N - 1), 2 * (N - 1), 2 * count - cs(r) - cs(r + 1),
                       2 * count - cs(r - 1) - cs(r), itemsize)
    if collective == "barrier":
        return _counts(ceil_log2(N), ceil_log2(N), 0, 0, itemsize)
    if collective == "scatter":
        if r == root:
            return {"messages_sent": 2 * (N - 1), "messages_received": 0,
                    "bytes_sent": (N - 1) * HEADER_BYTES + (count - cs(root)) * itemsize,
                    "bytes_received": 0}
        return {"messages_sent": 0, "messages_received": 2, "bytes_sent": 0,
                "bytes_received": HEADER_BYTES + cs(r) * itemsize}
    if collective in ("gather_to_root", "reduce_to_root", "broadcast"):
        linear = collective == "gather_to_root" or _rooted_algorithm(collective, algorithm) == "linear"
        v = (r - root) % N
        if linear:
            toward_root, away_from_root = (0 if v == 0 else 1), (N - 1 if v == 0 else 0)
        else:
            toward_root, away_from_root = (0 if v == 0 else 1), binomial_children(v, N)
        # toward_root: messages up to the parent/root; away_from_root: to children/others
        if collective == "broadcast":
            ms, mr = away_from_root, toward_root
        else:
            ms, mr = toward_root, away_from_root
        return _counts(ms, mr, ms * count, mr * count, itemsize)
    # recursive doubling and Rabenseifner: fold-in/out around a power-of-two core
    p = 1 << (N.bit_length() - 1)
    rem, L = N - p, p.bit_length() - 1
    if r < 2 * rem and r % 2 == 0:
        return _counts(1, 1, count, count, itemsize)
    fold = 1 if r < 2 * rem else 0
    if collective == "recursive_doubling_allreduce":
        m = L + fold
        return _counts(m, m, m * count, m * count, itemsize)
    v = r // 2 if fold else r - rem
    starts = chunk_starts(count, p)
    kept = sum(starts[((v >> (L - k)) + 1) << (L - k)] - starts[(v >> (L - k)) << (L - k)]
               for k in range(1, L + 1))
    elements = count - (starts[v + 1] - starts[v]) + kept + fold * count
    return _counts(2 * L + fold, 2 * L + fold, elements, elements, itemsize)


def rounds(collective: str, size: int, algorithm: str | None = None) -> int:
    """Sequential message steps on the critical path (latency terms) of `collective` over
    `size` ranks: ring all-reduce 2(N-1); ring reduce-scatter / all-gather N-1; linear
    gather / reduce / broadcast N-1 (the root handles N-1 messages one after another);
    binomial reduce / broadcast ceil_log2(N); scatter 2(N-1) (header + piece per rank);
    recursive doubling log2(p) and Rabenseifner 2*log2(p), each + 2 when N is not a power
    of two; barrier ceil_log2(N). For collective="allreduce" pass the algorithm (no
    "auto": that depends on the buffer size)."""
    _check_args(collective, size, 0, 0, 0, 0)
    N = size
    if collective == "allreduce":
        if algorithm not in _ALLREDUCE_BY_ALGORITHM:
            raise ValueError(f"rounds('allreduce') needs algorithm in {list(_ALLREDUCE_BY_ALGORITHM)} "
                             f"(got {algorithm!r})")
        collective = _ALLREDUCE_BY_ALGORITHM[algorithm]
    if N == 1:
        return 0
    p = 1 << (N.bit_length() - 1)
    fold = 2 if N != p else 0
    L = p.bit_length() - 1
    if collective in ("reduce_to_root", "broadcast"):
        return ceil_log2(N) if _rooted_algorithm(collective, algorithm) == "binomial" else N - 1
    return {"ring_allreduce": 2 * (N - 1), "ring_reduce_scatter": N - 1, "ring_allgather": N - 1,
            "gather_to_root": N - 1, "scatter": 2 * (N - 1), "barrier": ceil_log2(N),
            "recursive_doubling_allreduce": L + fold,
            "rabenseifner_allreduce": 2 * L + fold}[collective]


def scratch_bytes(collective: str, size: int, rank: int, count: int, itemsize: int,
                  root: int = 0, algorithm: str | None = None) -> int:
    """Bytes of scratch `rank` reports to the ledger while `collective` runs (its peak
    within the call; outputs a collective returns are not scratch). One rank needs none.

    ring_allreduce: one receive buffer of the longest chunk, ceil(count/N) elements;
    ring_reduce_scatter: two of them; reduce_to_root "linear": the root's receive buffer
    (count); "binomial": a receive buffer on every inner node (v even, v+1 < N) plus the
    partial sum off the root; recursive doubling: a whole receive buffer; Rabenseifner:
    the larger half of the p-way split (the whole buffer on a rank that receives a
    fold-in); gather, broadcast, scatter, ring_allgather: none."""
    _check_args(collective, size, rank, count, itemsize, root)
    if collective == "allreduce":
        collective = _allreduce_name(count, itemsize, size, algorithm)
    if size == 1:
        return 0
    longest_chunk = -(-count // size)
    if collective == "ring_allreduce":
        return longest_chunk * itemsize
    if collective == "ring_reduce_scatter":
        return 2 * longest_chunk * itemsize
    if collective == "recursive_doubling_allreduce":
        return count * itemsize
    if collective == "rabenseifner_allreduce":
        p = 1 << (size.bit_length() - 1)
        if rank < 2 * (size - p) and rank % 2 == 1:
            return count * itemsize
        half = chunk_starts(count, p)[p // 2]
        return max(half, count - half) * itemsize
    if collective == "reduce_to_root":
        v = (rank - root) % size
        if _rooted_algorithm(collective, algorithm) == "linear":
            return count * itemsize if v == 0 else 0
        inner = v % 2 == 0 and v + 1 < size
        return (count + (count if v != 0 else 0)) * itemsize if inner else 0
    return 0


def syncbn_message_counts(num_features: int, size: int, rank: int, algorithm: str = "ring") -> dict:
    """``{messages_sent, messages_received, bytes_sent, bytes_received}`` of one SyncBatchNorm
    layer with `num_features` channels on `rank`, per training step (forward + backward):
    the all-gather of 2C+1 float64 per rank, then the all-reduce of 2C float64 (`algorithm`).
    For N ranks and the ring: 3(N-1) messages each way, and rank r sends
    ``8 * ((N-1)(2C+1) + 4C - cs(r) - cs(r+1))`` bytes, cs = np.array_split's chunks of 2C."""
    forward = message_counts("ring_allgather", size, rank, size * (2 * num_features + 1), 8)
    backward = message_counts("allreduce", size, rank, 2 * num_features, 8, algorithm=algorithm)
    return {k: forward[k] + backward[k] for k in forward}
