"""The critical path of each collective as a list of `Step`s: the rounds that cost the same.

One function per algorithm (`ring_allreduce_steps`, `broadcast_steps`, ...) says how many
rounds run one after another, how many bytes one busy rank sends and reduces in each, and
how many transfers are in flight job-wide; `minidist.cost.costmodel` prices them. The
repeat counts come from `minidist.cost.counts`, so model and ledger count messages from
one source. Formulas and their sources (Thakur, Rabenseifner and Gropp 2005; MPICH;
Patarasuk and Yuan 2009): docs/cost-model.md.
"""
from __future__ import annotations

from typing import NamedTuple

from . import counts

__all__ = ["Step", "ALLREDUCE_STEPS", "COLLECTIVE_STEPS", "mpich_allreduce_algorithm",
           "ring_reduce_scatter_steps", "ring_allgather_steps", "ring_allreduce_steps",
           "recursive_doubling_steps", "rabenseifner_steps", "broadcast_steps", "reduce_steps",
           "gather_steps", "scatter_steps", "SCATTER_HEADER_BYTES"]


class Step(NamedTuple):
    """`repeat` rounds on the critical path, each sending `nbytes` and reducing
    `reduce_bytes` per busy rank, with `concurrent` transfers in flight job-wide."""
    repeat: int
    nbytes: float
    reduce_bytes: float
    concurrent: int


def _pof2_floor(size: int) -> int:
    return 1 << (size.bit_length() - 1)


def ring_reduce_scatter_steps(size, nbytes):
    """Ring reduce-scatter: ``(N-1) alpha + (N-1)/N n beta + (N-1)/N n gamma``.

    N-1 rounds; in each every rank sends a block of n/N bytes to its right neighbour and
    adds the block it receives (Patarasuk and Yuan, "Bandwidth optimal all-reduce
    algorithms for clusters of workstations", JPDC 69(2), 2009; MPICH
    ``MPIR_Reduce_scatter_intra_ring``). ``n`` is the whole input vector."""
    return [Step(counts.rounds("ring_reduce_scatter", size), nbytes / size, nbytes / size, size)]


def ring_allgather_steps(size, nbytes):
    """Ring all-gather: ``(N-1) alpha + (N-1)/N n beta``.

    N-1 rounds of one n/N block to the right neighbour (MPICH ``MPIR_Allgather_intra_ring``
    header comment; Thakur et al. 2005, section 4.1). ``n`` is the whole result vector."""
    return [Step(counts.rounds("ring_allgather", size), nbytes / size, 0.0, size)]


def ring_allreduce_steps(size, nbytes):
    """Ring all-reduce = ring reduce-scatter + ring all-gather:
    ``2(N-1) alpha + 2(N-1)/N n beta + (N-1)/N n gamma``.

    Its bandwidth term 2(N-1)/N n beta meets the lower bound of Patarasuk and Yuan 2009
    for any all-reduce; the price is 2(N-1) latencies, linear in N."""
    return ring_reduce_scatter_steps(size, nbytes) + ring_allgather_steps(size, nbytes)


def recursive_doubling_steps(size, nbytes):
    """Recursive-doubling all-reduce: ``lg N (alpha + n beta + n gamma)`` for N = 2^k.

    Round k exchanges the whole vector with rank XOR 2^k and adds it (Thakur et al. 2005,
    section 4.4; MPICH ``MPIR_Allreduce_intra_recursive_doubling``). Otherwise MPICH first
    folds the r = N - p' extra ranks in (even rank 2i sends to 2i+1, which adds) and sends
    them the result at the end: ``(lg p' + 2) alpha + (lg p' + 2) n beta +
    (lg p' + 1) n gamma``."""
    pof2 = _pof2_floor(size)
    rem = size - pof2
    out = [Step(1, nbytes, nbytes, rem)] if rem else []
    out.append(Step(pof2.bit_length() - 1, nbytes, nbytes, pof2))
    if rem:
        out.append(Step(1, nbytes, 0.0, rem))
    return out


def rabenseifner_steps(size, nbytes):
    """Rabenseifner's all-reduce (reduce-scatter by recursive halving, then all-gather by
    recursive doubling): ``2 lg N alpha + 2(N-1)/N n beta + (N-1)/N n gamma`` for N = 2^k.

    Round k of the halving sends and reduces n / 2^(k+1) bytes; the all-gather mirrors it
    (Thakur et al. 2005, section 4.4; MPICH ``MPIR_Allreduce_intra_reduce_scatter_allgather``
    comment). For other N the r extra ranks are folded in and served as in recursive
    doubling: ``(2 lg p' + 2) alpha + (2 (p'-1)/p' + 2) n beta + ((p'-1)/p' + 1) n gamma``.
    """
    pof2 = _pof2_floor(size)
    rem = size - pof2
    out = [Step(1, nbytes, nbytes, rem)] if rem else []
    halves = [nbytes / (2 << k) for k in range(pof2.bit_length() - 1)]
    out += [Step(1, m, m, pof2) for m in halves]          # reduce-scatter, recursive halving
    out += [Step(1, m, 0.0, pof2) for m in reversed(halves)]  # all-gather, recursive doubling
    if rem:
        out.append(Step(1, nbytes, 0.0, rem))
    return out


def _binomial_rounds(size, nbytes, reduce):
    # Round k of a binomial tree has min(2^k, N - 2^k) transfers in flight.
    return [Step(1, nbytes, nbytes if reduce else 0.0, min(1 << k, size - (1 << k)))
            for k in range(counts.ceil_log2(size))]


def broadcast_steps(size, nbytes, algorithm="linear"):
    """Broadcast of n bytes from the root.

    - ``"linear"``: the root sends to each rank in turn, serialised at its link:
      ``(N-1)(alpha + n beta)``.
    - ``"binomial"``: ``ceil(lg N)(alpha + n beta)`` (Thakur et al. 2005, section 4.2;
      MPICH ``MPIR_Bcast_intra_binomial``: the root sends in every round)."""
    if algorithm == "linear":
        return [Step(counts.rounds("broadcast", size, "linear"), nbytes, 0.0, 1)]
    if algorithm == "binomial":
        return _binomial_rounds(size, nbytes, reduce=False)
    raise ValueError(f"broadcast algorithm must be 'linear' or 'binomial' (got {algorithm!r})")


def reduce_steps(size, nbytes, algorithm="linear"):
    """Reduce of n bytes to the root.

    - ``"linear"``: the root receives and adds every other rank's vector in turn:
      ``(N-1)(alpha + n beta + n gamma)``.
    - ``"binomial"``: ``ceil(lg N)(alpha + n beta + n gamma)`` (Thakur et al. 2005,
      section 4.3; MPICH ``MPIR_Reduce_intra_binomial``: the root receives and adds in
      every round)."""
    if algorithm == "linear":
        return [Step(counts.rounds("reduce_to_root", size, "linear"), nbytes, nbytes, 1)]
    if algorithm == "binomial":
        return _binomial_rounds(size, nbytes, reduce=True)
    raise ValueError(f"reduce algorithm must be 'linear' or 'binomial' (got {algorithm!r})")


def gather_steps(size, nbytes):
    """Linear gather of n bytes from every rank to the root: ``(N-1)(alpha + n beta)``,
    serialised at the root's link (MPICH ``MPIR_Gatherv_allcomm_linear``; ``n`` is one
    rank's contribution, the root ends with N n)."""
    return [Step(counts.rounds("gather_to_root", size), nbytes, 0.0, 1)]


SCATTER_HEADER_BYTES = counts.HEADER_BYTES  # the shape header sent before each piece


def scatter_steps(size, nbytes):
    """Linear scatter of the root's n bytes, about n/N to each rank, as `rooted.scatter`
    does it: a small header (shape and dtype, 80 bytes) then the piece, to each rank in
    turn, serialised at the root: ``2(N-1) alpha + ((N-1)/N n + 80 (N-1)) beta``.
    (MPICH's own ``MPIR_Scatter_intra_binomial`` would cost
    ``ceil(lg N) alpha + (N-1)/N n beta``; Thakur et al. 2005, section 4.5.)"""
    each = counts.rounds("scatter", size) // 2
    return [Step(each, SCATTER_HEADER_BYTES, 0.0, 1), Step(each, nbytes / size, 0.0, 1)]


def mpich_allreduce_algorithm(size, nbytes, itemsize=4):
    """The algorithm MPICH's ``MPI_Allreduce`` runs for a built-in commutative op.

    Read from the selection tables compiled into the installed MPICH (5.0.2 wheel; the
    same JSON as ``maint/tuning/coll/mpir/generic.json`` in the MPICH sources): recursive
    doubling when ``n <= 8`` bytes or ``count < p'``, else reduce-scatter + all-gather
    (Rabenseifner). On one node the ch4 layer would first try the shared-memory
    "release_gather" algorithm, but only when ``is_multi_threaded=no``; mpi4py initialises
    MPI with ``MPI_THREAD_MULTIPLE`` by default, so the MPIR choice above is what runs."""
    if size <= 1:
        return "none"
    if nbytes <= 8 or nbytes // itemsize < _pof2_floor(size):
        return "recursive_doubling"
    return "rabenseifner"


ALLREDUCE_STEPS = {
    "ring": ring_allreduce_steps,
    "recursive_doubling": recursive_doubling_steps,
    "rabenseifner": rabenseifner_steps,
}

# collective name -> (steps function, default algorithm or None when it takes none)
COLLECTIVE_STEPS = {
    "ring_reduce_scatter": (ring_reduce_scatter_steps, None),
    "ring_allgather": (ring_allgather_steps, None),
    "ring_allreduce": (ring_allreduce_steps, None),
    "recursive_doubling_allreduce": (recursive_doubling_steps, None),
    "rabenseifner_allreduce": (rabenseifner_steps, None),
    "allreduce": (None, "auto"),
    "mpi_allreduce": (None, None),
    "gather_to_root": (gather_steps, None),
    "reduce_to_root": (reduce_steps, "linear"),   # defaults as in rooted.py
    "broadcast": (broadcast_steps, "linear"),
    "scatter": (scatter_steps, None),
}
