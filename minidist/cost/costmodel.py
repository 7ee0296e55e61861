"""Alpha-beta-gamma cost model of every collective in `minidist.comm`.

Hockney's model, as used by Thakur, Rabenseifner and Gropp, "Optimization of Collective
Communication Operations in MPICH" (IJHPCA 19(1), 2005): sending a message of ``m`` bytes
costs ``alpha + m * beta``, reducing ``m`` bytes costs ``m * gamma``. Notation below:
``N`` ranks, ``n`` bytes (the whole vector each rank holds), ``lg`` = log2,
``p' = 2**floor(lg N)`` and ``r = N - p'``.

Each algorithm is described by its critical path as a short list of `Step`s (rounds that
cost the same); the time of a step adds a node-wide memory-bandwidth term, because ranks
on one machine share its memory (16 ranks of a ring all-reduce of 64 MiB took 76 ms on a
16-core machine, 2 ranks 24 ms, though each rank's bytes hardly change)::

    t_step = alpha + max(m * beta + red * gamma,  c * (m + red) / node_bw)

where ``alpha`` is ``profile.alpha_for(m)`` (a calibrated profile may charge messages past
MPICH's eager limit a larger, rendezvous alpha), ``m`` the bytes one rank sends in the
round, ``red`` the bytes it reduces, and
``c = min(concurrent transfers, ranks_per_node)`` the ranks of one node busy at once: a
roofline, each rank's own link or the node's shared memory, whichever is slower. With
``node_bw=None`` the formulas reduce to the textbook ones quoted in each docstring.

The repeat counts (the latency terms) come from `minidist.comm.counts`, the closed forms
the ledger is checked against, so model and ledger count messages from one source; the
tests check the bytes of each critical path against `counts.message_counts` too.

Public entry points: `predict` (seconds), `cost_terms` (the alpha/beta/gamma parts),
`steps`, `best_allreduce`, `use_profile` (the profile ``allreduce(algorithm="auto")``
consults; `current_profile` reads it back), `prediction_table` / `format_table` for
reports, and the profiles (`Profile`, `PROFILES`, `save_profile`, `load_profile`) re-exported from
`minidist.comm.profiles`; `calibrate` lives in `minidist.comm.calibrate`.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

from ..comm.auto import choose_allreduce_algorithm, set_auto_table
from . import counts
from .profiles import PROFILES, Profile, get_profile, load_profile, save_profile

__all__ = ["Step", "COLLECTIVE_STEPS", "ALLREDUCE_STEPS", "steps", "predict", "cost_terms",
           "mpich_allreduce_algorithm", "best_allreduce", "use_profile", "current_profile",
           "default_profile",
           "prediction_table", "format_table",
           "Profile", "PROFILES", "get_profile", "save_profile", "load_profile"]


class Step(NamedTuple):
    """`repeat` rounds on the critical path, each sending `nbytes` and reducing
    `reduce_bytes` per busy rank, with `concurrent` transfers in flight job-wide."""
    repeat: int
    nbytes: float
    reduce_bytes: float
    concurrent: int


def _pof2_floor(size: int) -> int:
    return 1 << (size.bit_length() - 1)


# ---- the algorithms --------------------------------------------------------------------
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


def _check(size, nbytes):
    if not (isinstance(size, int) or hasattr(size, "__index__")) or int(size) < 1:
        raise ValueError(f"size must be an int >= 1 ranks (got {size!r})")
    if not (nbytes >= 0 and math.isfinite(nbytes)):
        raise ValueError(f"nbytes must be a finite number >= 0 (got {nbytes!r})")
    return int(size), float(nbytes)


def steps(collective, size, nbytes, algorithm=None, profile=None, itemsize=4):
    """The critical path of `collective` on `size` ranks for `nbytes`, as `Step`s.

    ``collective`` is one of `COLLECTIVE_STEPS`; ``algorithm`` picks the variant where there is
    a choice (``broadcast``/``reduce_to_root``: linear (default, as in rooted.py) or
    binomial; ``allreduce``: auto|ring|recursive_doubling|rabenseifner|mpi).
    ``allreduce`` with ``"auto"`` asks `minidist.comm.allreduce.choose_allreduce_algorithm`
    (given `profile`). One rank communicates nothing: the list is empty."""
    size, nbytes = _check(size, nbytes)
    if collective not in COLLECTIVE_STEPS:
        raise ValueError(f"unknown collective {collective!r}; expected one of "
                         f"{sorted(COLLECTIVE_STEPS)}")
    if size == 1:
        return []
    fn, default = COLLECTIVE_STEPS[collective]
    if collective == "mpi_allreduce" or (collective == "allreduce" and algorithm == "mpi"):
        return ALLREDUCE_STEPS[mpich_allreduce_algorithm(size, nbytes, itemsize)](size, nbytes)
    if collective == "allreduce":
        algorithm = algorithm or default
        if algorithm == "auto":
            # what runs here (comm's installed table), or the model's choice for `profile`
            algorithm = (choose_allreduce_algorithm(nbytes, size) if profile is None else
                         best_allreduce(size, nbytes, profile, candidates=AUTO_CANDIDATES))
        if algorithm not in ALLREDUCE_STEPS:
            raise ValueError(f"allreduce algorithm must be 'auto', 'mpi' or one of "
                             f"{sorted(ALLREDUCE_STEPS)} (got {algorithm!r})")
        return ALLREDUCE_STEPS[algorithm](size, nbytes)
    if default is None:
        if algorithm is not None:
            raise ValueError(f"{collective} has no algorithm choice (got algorithm={algorithm!r})")
        return fn(size, nbytes)
    return fn(size, nbytes, algorithm or default)


def cost_terms(collective, size, nbytes, profile="shm", algorithm=None, ranks_per_node=None,
               itemsize=4):
    """Predicted time of `collective` split into its parts, in seconds and bytes.

    Returns a dict: ``rounds`` (messages on the critical path), ``bytes`` (bytes sent along
    it), ``reduce_bytes``, ``alpha_s`` (each message's ``profile.alpha_for(m)``, summed:
    ``rounds * alpha`` for a profile with one alpha), ``beta_s = bytes * beta``,
    ``gamma_s = reduce_bytes * gamma``, ``node_s`` (extra time where the node's shared
    bandwidth, not the link, is the limit), ``call_s`` (the profile's per-call overhead)
    and ``total_s``, their sum."""
    prof = get_profile(profile)
    rpn = prof.ranks_per_node if ranks_per_node is None else int(ranks_per_node)
    if rpn < 1:
        raise ValueError(f"ranks_per_node must be >= 1 (got {ranks_per_node!r})")
    terms = dict(rounds=0, bytes=0.0, reduce_bytes=0.0, alpha_s=0.0, beta_s=0.0, gamma_s=0.0,
                 node_s=0.0)
    for step in steps(collective, size, nbytes, algorithm, prof, itemsize):
        link = step.nbytes * prof.beta + step.reduce_bytes * prof.gamma
        node = 0.0
        if prof.node_bw is not None:
            busy = min(step.concurrent, rpn)
            node = busy * (step.nbytes + step.reduce_bytes) / prof.node_bw
        terms["rounds"] += step.repeat
        terms["bytes"] += step.repeat * step.nbytes
        terms["reduce_bytes"] += step.repeat * step.reduce_bytes
        terms["alpha_s"] += step.repeat * prof.alpha_for(step.nbytes)
        terms["beta_s"] += step.repeat * step.nbytes * prof.beta
        terms["gamma_s"] += step.repeat * step.reduce_bytes * prof.gamma
        terms["node_s"] += step.repeat * max(0.0, node - link)
    terms["call_s"] = prof.call_overhead if size > 1 else 0.0  # the Python call around the messages
    terms["total_s"] = (terms["alpha_s"] + terms["beta_s"] + terms["gamma_s"] + terms["node_s"]
                        + terms["call_s"])
    return terms


def predict(collective, size, nbytes, profile="shm", algorithm=None, ranks_per_node=None,
            itemsize=4):
    """Predicted seconds for `collective` on `size` ranks moving `nbytes`.

    Args:
        collective: a name in `COLLECTIVE_STEPS` (``"ring_allreduce"``, ``"broadcast"``, ...).
        size: number of ranks N (any N >= 1; N = 1 costs 0).
        nbytes: bytes of the vector (see each ``*_steps`` docstring for which vector).
        profile: a `Profile` or a name in `PROFILES`.
        algorithm: variant where the collective has a choice (see `steps`).
        ranks_per_node: overrides ``profile.ranks_per_node``.
        itemsize: element size, used where MPICH's choice depends on the element count.
    """
    return cost_terms(collective, size, nbytes, profile, algorithm, ranks_per_node,
                      itemsize)["total_s"]


_choices: dict = {}  # (size, nbytes, id(profile), ...) -> (profile, algorithm)


def best_allreduce(size, nbytes, profile="shm", ranks_per_node=None,
                   candidates=("recursive_doubling", "rabenseifner", "ring")):
    """The all-reduce algorithm with the smallest predicted time (ties: first listed).

    Memoised by the profile's identity (a dict lookup, well under a microsecond), since
    ``allreduce(algorithm="auto")`` asks on every call."""
    key = (size, nbytes, id(profile), ranks_per_node, candidates)
    hit = _choices.get(key)
    if hit is not None and hit[0] is profile:
        return hit[1]
    times = {alg: predict("allreduce", size, nbytes, profile, alg, ranks_per_node)
             for alg in candidates}
    best = min(candidates, key=lambda alg: times[alg])
    if len(_choices) >= 4096:
        _choices.clear()
    _choices[key] = (profile, best)  # holding the profile keeps its id from being reused
    return best


_default_profile: Profile | None = None


def use_profile(profile) -> Profile | None:
    """Make `profile` the process default: a `Profile`, a name in `PROFILES`, a path to a
    JSON profile, or None to clear it. It also installs the profile's `auto_table` in
    minidist.comm, so ``allreduce(algorithm="auto")`` follows it (None: comm's built-in
    "shm" table). Every rank must set the same one. Returns the profile set."""
    global _default_profile
    _default_profile = None if profile is None else _resolve(profile)
    set_auto_table(None if _default_profile is None else auto_table(_default_profile))
    return _default_profile


def current_profile() -> Profile | None:
    """The profile set by `use_profile`, or None (no environment lookup)."""
    return _default_profile


def default_profile() -> Profile | None:
    """The profile set by `use_profile`, else the one named by the environment variable
    ``MINIDIST_PROFILE`` (a name in `PROFILES` or a JSON file, read once per value and
    cached: edit the file and set the variable anew, or call `use_profile`), else None.
    Entry points (compare, predict, report, the labs) apply it with
    ``use_profile(default_profile())``."""
    if _default_profile is not None:
        return _default_profile
    env = os.environ.get("MINIDIST_PROFILE")
    if not env:
        return None
    profile = _env_profiles.get(env)
    if profile is None:
        if len(_env_profiles) >= 64:
            _env_profiles.clear()
        profile = _env_profiles[env] = _resolve(env)
    return profile


AUTO_CANDIDATES = ("recursive_doubling", "ring", "rabenseifner")


def _size_grid(largest=1 << 30):
    """0, 1, 2, 3, 4, 6, 8, 12, ...: powers of two and 1.5 times them, up to `largest`."""
    grid = {0, 1}
    for e in range(1, largest.bit_length()):
        grid |= {1 << e, 3 << (e - 1)}
    return sorted(g for g in grid if g <= largest)


AUTO_SIZES = (*range(2, 17), 32, 64, 128, 256, 512, 1024, 2048, 4096)


def auto_table(profile="shm", sizes=AUTO_SIZES) -> dict:
    """``{ranks: ((from_bytes, algorithm), ...)}``: where the model's fastest all-reduce
    (`best_allreduce` among `AUTO_CANDIDATES`) changes on `_size_grid`, per number of
    ranks; the table ``minidist.comm.auto`` looks up (its built-in one is this for "shm")."""
    table = {}
    for n in sizes:
        rows, previous = [], None
        for nbytes in _size_grid():
            best = best_allreduce(n, max(nbytes, 1), profile, candidates=AUTO_CANDIDATES)
            if best != previous:
                rows.append((nbytes, best))
                previous = best
        table[n] = tuple(rows)
    return table


_env_profiles: dict = {}  # $MINIDIST_PROFILE's value -> its Profile


def _resolve(profile) -> Profile:
    if isinstance(profile, (str, os.PathLike)) and str(profile) not in PROFILES:
        if not os.path.exists(profile):
            raise ValueError(f"profile {str(profile)!r} is neither a name in {sorted(PROFILES)} "
                             "nor an existing JSON file (see save_profile)")
        return load_profile(profile)
    return get_profile(profile)


DEFAULT_TABLE = ("ring_allreduce", "recursive_doubling_allreduce", "rabenseifner_allreduce",
                 "mpi_allreduce", "gather_to_root", "broadcast")


def prediction_table(nbytes, sizes=(2, 4, 8, 16, 64, 256, 1024, 4096), profile="shm",
                     collectives=DEFAULT_TABLE, ranks_per_node=None):
    """Rows ``{"ranks": N, collective: seconds, ...}`` of predicted times for a vector of
    `nbytes` (e.g. a model's gradients: parameters * 4 for float32) as N grows."""
    return [{"ranks": n, **{c: predict(c, n, nbytes, profile, ranks_per_node=ranks_per_node)
                            for c in collectives}} for n in sizes]


def format_table(rows, unit="ms"):
    """A Markdown table of `prediction_table` rows, times in `unit` (s, ms or us)."""
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    cols = list(rows[0])
    lines = ["| " + " | ".join(c if c == "ranks" else f"{c} ({unit})" for c in cols) + " |",
             "| " + " | ".join("---:" for _ in cols) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]) if c == "ranks" else f"{row[c] * scale:.4g}"
                                       for c in cols) + " |")
    return "\n".join(lines)
