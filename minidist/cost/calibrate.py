"""`minidist calibrate`: measure this machine's alpha, beta, gamma and node bandwidth.

A collective sweep (every rank calls it): ranks 0 and 1 exchange m bytes both ways at once,
as a ring step does (on buffers as a step leaves them: `measure.StepBuffers`), over sizes
from 8 B to 32 MiB; alpha, a rendezvous alpha and beta come
from a robust fit by medians over the sizes where each term dominates (noise cannot drag
them to zero as a least-squares slope can); all pairs exchanging at once give the node
bandwidth; gamma is the slope of np.add's time on such buffers. Rank 0 fits
and broadcasts, so every rank returns the same `Profile`. `fit_alpha_beta` and the gamma
measurements also serve compare's quick calibration (`minidist.cost.machine`). The method
in full: docs/cost-model.md.
"""
from __future__ import annotations

import datetime
import math
import platform

import numpy as np

from ..comm import Communicator, broadcast, mpi_allreduce
from .measure import add_seconds, exchange, pingpong, repeats_for
from .profiles import Profile

__all__ = ["calibrate", "fit_alpha_beta", "fit_eager_rendezvous", "DEFAULT_SIZES", "QUICK_SIZES"]

DEFAULT_SIZES = tuple(8 << (2 * k) for k in range(12))      # 8 B .. 32 MiB, x4 apart
QUICK_SIZES = (8, 1024, 64 << 10, 1 << 20)
GAMMA_SIZES = (256 << 10, 1 << 20, 4 << 20, 16 << 20)
QUICK_GAMMA_SIZES = (64 << 10, 256 << 10, 1 << 20)
SMALL_MAX = 4 << 10    # alpha from sizes up to here: eager, beta * m negligible
LARGE_MIN = 64 << 10   # beta from sizes from here up: the bandwidth regime


def fit_alpha_beta(sizes, times, small_max=SMALL_MAX, large_min=LARGE_MIN):
    """Robust fit of ``t = alpha + beta * m`` from (size, seconds) pairs.

    Each parameter comes from the sizes where it dominates, by medians, so one slow sample
    (a neighbour's burst of load) cannot drag it, and noise cannot flatten beta to zero as a
    least-squares slope can:

    * ``alpha = median(t_i - beta * m_i)`` over the small sizes ``m_i <= small_max``
      (eager protocol; ``beta * m`` is a few percent of ``t`` there);
    * ``beta = median((t_j - alpha) / m_j)`` over the large sizes ``m_j >= large_min``
      (the bandwidth regime, past MPICH's eager/rendezvous switch);

    iterated a few times from ``beta = 0`` (each round shrinks the error by about
    ``small / large``, so an exact line comes back exactly). Where the sweep has no size on
    one side, the smallest (largest) half of the sizes stands in.

    Returns ``(alpha, beta)``, both > 0: ``beta >= median(t_j / m_j) / 2`` (at least half
    of the time per byte actually seen at the large sizes) and ``alpha >= min(t_i) / 10``
    over the small sizes.
    """
    m = np.asarray(sizes, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if m.shape != t.shape or m.ndim != 1 or m.size < 2:
        raise ValueError(f"need at least two (size, time) pairs of equal length "
                         f"(got {m.size} sizes, {t.size} times)")
    if not (np.all(m > 0) and np.all(t > 0) and np.all(np.isfinite(t))):
        raise ValueError(f"sizes and times must be finite and > 0 (got sizes {m.tolist()}, "
                         f"times {t.tolist()})")
    order = np.argsort(m)
    half = max(1, m.size // 2)
    small = m <= small_max if np.any(m <= small_max) else np.isin(np.arange(m.size), order[:half])
    large = m >= large_min if np.any(m >= large_min) else np.isin(np.arange(m.size), order[-half:])
    if np.any(large & ~small):  # a size in both groups would tie the two equations together
        large &= ~small
    beta_floor = 0.5 * float(np.median(t[large] / m[large]))
    alpha_floor = 0.1 * float(t[small].min())
    beta = 0.0
    for _ in range(20):
        alpha = max(float(np.median(t[small] - beta * m[small])), alpha_floor)
        beta = max(float(np.median((t[large] - alpha) / m[large])), beta_floor)
    return alpha, beta


def fit_eager_rendezvous(sizes, times, eager_max=SMALL_MAX, large_min=LARGE_MIN):
    """Two-regime fit: ``t = alpha + beta * m`` up to `eager_max` bytes and
    ``t = rendezvous_alpha + beta * m`` above (MPICH sends small messages eagerly and
    larger ones after a handshake, a fixed cost more per message).

    ``alpha`` comes from the sizes <= `eager_max` (`fit_alpha_beta`); ``rendezvous_alpha``
    and ``beta`` from a second `fit_alpha_beta` over the sizes above `eager_max` (its
    intercept from those below `large_min`, its slope from those from `large_min` up).
    Returns ``(alpha, beta, rendezvous_alpha)``; ``rendezvous_alpha`` is None where the
    sweep has fewer than two sizes above `eager_max` or the data show no step up (less
    than 10 % over alpha), so the profile keeps one alpha."""
    m = np.asarray(sizes, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    alpha, beta = fit_alpha_beta(m, t, small_max=eager_max, large_min=large_min)
    above = m > eager_max
    if np.count_nonzero(above) < 2 or not np.any(m <= eager_max):
        return alpha, beta, None
    rendezvous_alpha, beta_above = fit_alpha_beta(m[above], t[above],
                                                  small_max=large_min - 1, large_min=large_min)
    if rendezvous_alpha <= 1.1 * alpha:
        return alpha, beta, None
    return alpha, beta_above, rendezvous_alpha


def _gamma(sizes, repeats):
    """Slope of np.add(a, b, out=a) time against the bytes of `a` (float32), by plain
    least squares, so the big (out-of-cache) sizes where gamma matters set it."""
    times = [float(np.mean(add_seconds(nbytes, repeats_for(nbytes, repeats)))) for nbytes in sizes]
    slope = float(np.polyfit(np.asarray(sizes, float), np.asarray(times), 1)[0])
    return (slope if slope > 0 else times[-1] / sizes[-1]), times


def _ranks_per_node(c):
    most = np.array([c.ranks_on_node()], dtype=np.int64)
    return int(mpi_allreduce(c, most, "max")[0])


def calibrate(comm, sizes=None, repeats=30, quick=False, base=None, details=False, passes=3):
    """Measure alpha, beta, gamma and the node bandwidth; return a `Profile`, the same on
    every rank. Collective; a few seconds with the defaults, well under one with `quick`.

    Args:
        comm: a `Communicator`; its MPI communicator is used through a private one, so its
            ledger is left alone.
        sizes: message sizes in bytes (default `DEFAULT_SIZES`, 8 B to 32 MiB; `QUICK_SIZES`
            when quick).
        repeats: timed repetitions per size (fewer for big messages), after 2 warm-ups,
            spread over `passes` interleaved sweeps (1 when quick).
        quick: a tiny sweep, for tests.
        base: with a single rank, keep this `Profile`'s alpha/beta/node_bw and measure only
            gamma (without it, a ValueError says what to do).
        details: also return the raw measurements, as ``(profile, dict)`` with the keys
            ``sizes``, ``exchange``, ``all_pairs``, ``pingpong`` (rank 0; measured only
            here), ``gamma_sizes`` and ``gamma_times`` (np.add, rank 0).

    Returns ``Profile(name="calibrated", ...)`` with ``eager_max`` and ``rendezvous_alpha``
    None where the sweep shows no eager/rendezvous step.
    """
    c = Communicator(getattr(comm, "mpi", comm))  # private ledger: the caller's is left alone
    if quick:
        repeats, passes = min(repeats, 5), 1
    sizes = tuple(int(s) for s in (sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)))
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"calibrate needs at least two message sizes >= 1 byte (got {sizes})")
    gamma_sizes = QUICK_GAMMA_SIZES if quick else GAMMA_SIZES
    if c.size == 1:
        return _gamma_only(base, gamma_sizes, repeats, details)
    rpn = _ranks_per_node(c)
    exchanges, all_pairs, pingpongs = _sweep(c, sizes, repeats, passes, details)
    fitted, gamma_times = _fit_on_rank0(c, sizes, exchanges, all_pairs, gamma_sizes, repeats, rpn)
    profile = _calibrated_profile(c, sizes, rpn, *fitted)
    if not details:
        return profile
    return profile, {"sizes": list(sizes), "exchange": exchanges, "all_pairs": all_pairs,
                     "pingpong": pingpongs, "gamma_sizes": list(gamma_sizes),
                     "gamma_times": gamma_times}


def _gamma_only(base, gamma_sizes, repeats, details):
    """One rank has nobody to exchange with: `base` with gamma measured here."""
    if base is None:
        raise ValueError("calibrate needs at least 2 ranks for the exchange that measures "
                         "alpha and beta (got a communicator of size 1): run it under "
                         "`mpiexec -n 2 python ...`, or pass base=<Profile> to keep that "
                         "profile's alpha/beta and measure only gamma here")
    gamma, gamma_times = _gamma(gamma_sizes, repeats)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    profile = base.with_(name=f"{base.name}+gamma", gamma=gamma,
                         source=f"{base.source} | gamma measured by calibrate() on "
                                f"{platform.node()} (1 rank, {stamp})")
    return (profile, {"gamma_sizes": list(gamma_sizes), "gamma_times": gamma_times}) \
        if details else profile


def _sweep(c, sizes, repeats, passes, details):
    """Per size, the median over `passes` interleaved passes of the pair's exchange, of all
    pairs exchanging at once (4 ranks or more; else the pair's) and, with `details`, of a
    ping-pong (rank 0; None elsewhere)."""
    concurrent = c.size >= 4  # with 2 or 3 ranks "every pair" is the pair 0-1 itself
    samples = {m: ([], [], []) for m in sizes}  # size -> per-pass medians: pair, all, ping-pong
    for _ in range(passes):
        for nbytes in sizes:
            reps = max(3, repeats_for(nbytes, repeats) // passes)
            pair = exchange(c, nbytes, reps, all_pairs=False)
            samples[nbytes][0].append(pair)
            samples[nbytes][1].append(exchange(c, nbytes, reps, True) if concurrent else pair)
            if details:
                c.barrier()
                samples[nbytes][2].append(pingpong(c, np.ones(nbytes, np.uint8), reps))
    c.barrier()
    exchanges = [float(np.median(samples[m][0])) for m in sizes]
    all_pairs = [float(np.median(samples[m][1])) for m in sizes]
    pingpongs = [float(np.median(samples[m][2])) if c.rank == 0 and details else None
                 for m in sizes]
    return exchanges, all_pairs, pingpongs


def _fit_on_rank0(c, sizes, exchanges, all_pairs, gamma_sizes, repeats, rpn):
    """Rank 0 times np.add, fits, and broadcasts ``(alpha, beta, gamma, node_bw, timestamp,
    rendezvous_alpha or nan)``; also returns rank 0's np.add times (None elsewhere)."""
    result = np.full(6, np.nan)
    gamma_times = None
    if c.rank == 0:
        result[4] = datetime.datetime.now().timestamp()  # rank 0's clock stamps every rank's copy
        gamma, gamma_times = _gamma(gamma_sizes, repeats)
        alpha, beta, rendezvous = fit_eager_rendezvous(sizes, exchanges)
        slope = fit_eager_rendezvous(sizes, all_pairs)[1]
        result[5] = np.nan if rendezvous is None else rendezvous
        busy = min(c.size - c.size % 2, rpn)  # ranks of one node exchanging at once
        result[:4] = alpha, beta, gamma, busy / slope
    broadcast(c, result, root=0)
    return [float(v) for v in result], gamma_times


def _calibrated_profile(c, sizes, rpn, alpha, beta, gamma, node_bw, when, rendezvous):
    two_regimes = math.isfinite(rendezvous)
    stamp = datetime.datetime.fromtimestamp(when).isoformat(timespec="seconds")
    return Profile("calibrated", alpha=alpha, beta=beta, gamma=gamma, ranks_per_node=rpn,
                   node_bw=node_bw, eager_max=SMALL_MAX if two_regimes else None,
                   rendezvous_alpha=rendezvous if two_regimes else None,
                   source=f"calibrate() on {platform.node()}: {c.size} ranks, {rpn} per node, "
                          f"Sendrecv exchange {min(sizes)}-{max(sizes)} B, alpha from sizes "
                          f"<= {SMALL_MAX} B, beta from >= {LARGE_MIN} B (medians), gamma from "
                          f"np.add, on buffers as a step leaves them, {stamp}")
