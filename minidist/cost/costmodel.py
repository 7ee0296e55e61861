"""Alpha-beta-gamma time of every collective in `minidist.comm`, and the profile in use.

A message of m bytes costs ``alpha + m * beta`` and reducing m bytes ``m * gamma``
(Hockney's model, as Thakur, Rabenseifner and Gropp use it for MPICH); each collective's
critical path comes from `minidist.cost.steps`, and a round also waits for the node's
shared memory bandwidth when that is the slower (a roofline). `predict` gives seconds,
`cost_terms` the parts, `best_allreduce` the fastest algorithm; `use_profile` sets the
process's profile and installs its `auto_table` in comm, whose
``allreduce(algorithm="auto")`` then looks its thresholds up there. The formulas, the
roofline and the sources: docs/cost-model.md.
"""
from __future__ import annotations

import math
import os

from ..comm.auto import choose_allreduce_algorithm, set_auto_table
from .profiles import PROFILES, Profile, get_profile, load_profile, save_profile
from .steps import (ALLREDUCE_STEPS, COLLECTIVE_STEPS, SCATTER_HEADER_BYTES, Step,  # noqa: F401
                    broadcast_steps, gather_steps, mpich_allreduce_algorithm, rabenseifner_steps,
                    recursive_doubling_steps, reduce_steps, ring_allgather_steps,
                    ring_allreduce_steps, ring_reduce_scatter_steps, scatter_steps)

__all__ = ["Step", "COLLECTIVE_STEPS", "ALLREDUCE_STEPS", "steps", "predict", "cost_terms",
           "mpich_allreduce_algorithm", "best_allreduce", "use_profile", "current_profile",
           "default_profile",
           "prediction_table", "format_table",
           "Profile", "PROFILES", "get_profile", "save_profile", "load_profile"]


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
    ``allreduce`` with ``"auto"`` takes what runs here (the table installed in comm:
    `minidist.comm.auto.choose_allreduce_algorithm`), or, given `profile`, the model's
    choice for it. One rank communicates nothing: the list is empty."""
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

    Memoised by the profile's identity: `auto_table` asks it about 4,000 times, and
    `use_profile` (every entry point, every test) builds that table again for the same
    profile (40 ms the first time, 1 ms after, measured loaded)."""
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
