"""Measure this machine's alpha, beta, gamma and node bandwidth: a calibrated `Profile`.

Three measurements, every rank taking part in the same calls:

1. exchange: ranks 0 and 1 Sendrecv m bytes with each other, both directions at once,
   after a barrier (what one ring step does, started as a collective call starts), for m
   over `sizes`; the slower rank's median. ``alpha`` and ``beta`` come from it by a robust
   two-regime fit (`fit_eager_rendezvous`): ``alpha`` is the median intercept of the small
   sizes (<= 4 KiB: MPICH's eager protocol), ``rendezvous_alpha`` that of the sizes above
   (MPICH's handshake adds a fixed cost there; dropped where the data show no step), and
   ``beta`` the median of ``(t - rendezvous_alpha) / m`` over the sizes >= 64 KiB. Medians
   of the sizes where each term dominates cannot be dragged to ~0 by noise, as a
   least-squares slope can. (Ping-pong, one direction at a time, takes another path through
   MPICH and does not predict a ring step; with ``details=True`` it is measured and
   returned for comparison only.)
2. all pairs at once (4 ranks or more), each rank exchanging m bytes with ``rank ^ 1``:
   the slope ``s`` of the slowest rank, fitted alike, from which ``node_bw = c / s`` with
   ``c`` the ranks of one node that were busy, so that the model's node term
   ``c * m / node_bw`` reproduces what was seen (with 2 or 3 ranks this is exchange 1);
3. gamma: the larger of the slope of the time of ``np.add(a, b, out=a)`` (float32)
   against the bytes of ``a`` (256 KiB to 16 MiB), on rank 0 alone, and the median time
   per byte that the adds add to ranks 0 and 1 running a two-rank ring all-reduce's steps
   (with minus without the add: writing the block that the next step sends costs more
   than the add itself).

Messages go through a private `Communicator` over the same MPI communicator (same code
path as the collectives, ledger included, but the caller's ledger stays untouched).
Rank 0 fits and broadcasts; every rank returns the same profile. Buffers are filled
(never left as np.zeros, whose untouched pages all map the kernel's one zero page and
make a large send look cache-fast).
"""
from __future__ import annotations

import datetime
import math
import platform
from time import perf_counter

import numpy as np

from ..comm import Communicator, broadcast, mpi_allreduce
from ..comm.tags import TAG_CALIBRATE
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


def _repeats_for(nbytes, repeats):
    # Fewer repetitions for big messages: about 64 MiB moved per size at most.
    return int(max(3, min(repeats, (64 << 20) // max(nbytes, 1))))


def _pingpong(c, buf, repeats, warmup=2):
    """Half round-trip seconds (median) between ranks 0 and 1; None on other ranks."""
    times = []
    for i in range(warmup + repeats):
        if c.rank == 0:
            t0 = perf_counter()
            c.send(buf, 1, TAG_CALIBRATE)
            c.recv(buf, 1, TAG_CALIBRATE)
            if i >= warmup:
                times.append((perf_counter() - t0) / 2)
        elif c.rank == 1:
            c.recv(buf, 0, TAG_CALIBRATE)
            c.send(buf, 0, TAG_CALIBRATE)
    return float(np.median(times)) if times else None


def _exchange(c, sbuf, rbuf, repeats, all_pairs, warmup=2):
    """Seconds (median) of one Sendrecv with partner ``rank ^ 1`` (both directions at once,
    as in a ring step): ranks 0 and 1 only, or every pair at once (`all_pairs`). The two
    buffers swap roles after each exchange, as in the ring, where a step sends (or
    overwrites) the block the previous one received (or sent): MPICH's shared-memory path
    is several times slower for such a buffer than for one that kept its role. The slowest
    rank's time is returned on every rank."""
    partner = c.rank ^ 1
    busy = partner < c.size and (all_pairs or c.rank < 2)
    times = []
    for i in range(warmup + repeats):
        c.barrier()  # every exchange starts cold, as a collective call does (and OSU times)
        if busy:
            t0 = perf_counter()
            c.sendrecv(sbuf, partner, rbuf, partner, TAG_CALIBRATE)
            sbuf, rbuf = rbuf, sbuf  # send what was just received, as a ring step forwards it
            if i >= warmup:
                times.append(perf_counter() - t0)
    slowest = np.array([np.median(times) if times else 0.0])
    return float(mpi_allreduce(c, slowest, "max")[0])


def _gamma(sizes, repeats):
    """Slope of np.add(a, b, out=a) time against the bytes of `a` (float32), by plain
    least squares, so the big (out-of-cache) sizes where gamma matters set it."""
    times = []
    for nbytes in sizes:
        a = np.ones(nbytes // 4, dtype=np.float32)
        b = np.ones_like(a)
        np.add(a, b, out=a)  # touch the pages first
        reps = _repeats_for(nbytes, repeats)
        t0 = perf_counter()
        for _ in range(reps):
            np.add(a, b, out=a)
        times.append((perf_counter() - t0) / reps)
    slope = float(np.polyfit(np.asarray(sizes, float), np.asarray(times), 1)[0])
    return (slope if slope > 0 else times[-1] / sizes[-1]), times


def _reduce_in_ring(c, sizes, repeats, warmup=1):
    """Seconds per byte that a reduction adds to a two-rank ring all-reduce (slope of
    ``with adds - without`` over the bytes reduced), the slowest of ranks 0 and 1; every
    rank returns the list of per-size values.

    Ranks 0 and 1 run the ring's two steps on an n-byte float32 vector (send one half,
    receive the other into scratch, [add it into the kept half,] send the kept half,
    receive into the half sent first), with and without the add. A timed np.add alone
    misses what the ring pays: the add writes the block that the next step sends."""
    per_byte = []
    for nbytes in sizes:
        half = nbytes // 8
        x = np.ones(2 * half, dtype=np.float32)
        scratch = np.ones(half, dtype=np.float32)
        kept, sent = (x[:half], x[half:]) if c.rank == 0 else (x[half:], x[:half])
        partner = c.rank ^ 1
        busy = c.rank < 2
        times = ([], [])
        for i in range(warmup + _repeats_for(nbytes, repeats)):
            for add in (False, True):
                c.barrier()
                if not busy:
                    continue
                t0 = perf_counter()
                c.sendrecv(sent, partner, scratch, partner, TAG_CALIBRATE)
                if add:
                    np.add(kept, scratch, out=kept)
                c.sendrecv(kept, partner, sent, partner, TAG_CALIBRATE)
                if i >= warmup:
                    times[add].append(perf_counter() - t0)
        slowest = np.array([np.median(times[True]) - np.median(times[False]) if busy else -np.inf])
        mpi_allreduce(c, slowest, "max")
        per_byte.append(float(slowest[0]) / (half * 4))
    return per_byte


def _ranks_per_node(c):
    most = np.array([c.ranks_on_node()], dtype=np.int64)
    return int(mpi_allreduce(c, most, "max")[0])


def calibrate(comm, sizes=None, repeats=30, quick=False, base=None, details=False, passes=3):
    """Measure alpha, beta, gamma and the node bandwidth; return a `Profile`.

    Every rank must call it (it is collective). A few seconds with the defaults; with
    ``quick=True`` (tests) a tiny sweep of well under a second.

    Args:
        comm: a `Communicator` (or an mpi4py communicator).
        sizes: message sizes in bytes for the exchanges
            (default `DEFAULT_SIZES`, 8 B to 32 MiB; `QUICK_SIZES` when quick).
        repeats: timed repetitions per size (fewer for big messages), after 2 warm-ups,
            spread over `passes` interleaved sweeps (a burst of load from a neighbour
            then spoils a little of every size instead of all of one).
        passes: sweeps over the sizes (1 when quick).
        quick: tiny sweep for tests.
        base: with a single rank there is nobody to exchange with; if `base` (a
            `Profile`) is given, its alpha/beta/node_bw are kept and only gamma is
            measured, else a ValueError says so.
        details: also return the raw measurements, as ``(profile, dict)`` with the keys
            ``sizes``, ``exchange``, ``all_pairs``, ``pingpong`` (rank 0; measured only
            here), ``gamma_sizes``, ``gamma_times`` (np.add alone, rank 0) and
            ``gamma_in_ring`` (seconds per byte the adds cost in the ring's steps).

    Returns:
        ``Profile(name="calibrated", alpha, beta, gamma, ranks_per_node, node_bw, source,
        eager_max, rendezvous_alpha)`` (the last two None where the sweep shows no
        eager/rendezvous step), the same on every rank.
    """
    mpi_comm = getattr(comm, "mpi", comm)
    c = Communicator(mpi_comm)  # private ledger: the caller's accounting is left alone
    if quick:
        repeats, passes = min(repeats, 5), 1
    sizes = tuple(int(s) for s in (sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)))
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"calibrate needs at least two message sizes >= 1 byte (got {sizes})")
    gamma_sizes = QUICK_GAMMA_SIZES if quick else GAMMA_SIZES
    stamp = datetime.datetime.now().isoformat(timespec="seconds")

    if c.size == 1:
        if base is None:
            raise ValueError("calibrate needs at least 2 ranks for the exchange that measures "
                             "alpha and beta (got a communicator of size 1): run it under "
                             "`mpiexec -n 2 python ...`, or pass base=<Profile> to keep that "
                             "profile's alpha/beta and measure only gamma here")
        gamma, gamma_times = _gamma(gamma_sizes, repeats)
        profile = base.with_(name=f"{base.name}+gamma", gamma=gamma,
                             source=f"{base.source} | gamma measured by calibrate() on "
                                    f"{platform.node()} (1 rank, {stamp})")
        return (profile, {"gamma_sizes": list(gamma_sizes), "gamma_times": gamma_times}) \
            if details else profile

    rpn = _ranks_per_node(c)
    concurrent = c.size >= 4  # with 2 or 3 ranks "every pair" is the pair 0-1 itself
    sbuf = np.ones(max(sizes), dtype=np.uint8)  # written: np.zeros would read the zero page
    rbuf = np.ones_like(sbuf)
    # size -> lists of per-pass medians: pair exchange, all pairs at once, ping-pong
    samples = {m: ([], [], []) for m in sizes}
    for _ in range(passes):
        for nbytes in sizes:
            reps = max(3, _repeats_for(nbytes, repeats) // passes)
            send, recv = sbuf[:nbytes], rbuf[:nbytes]
            pair = _exchange(c, send, recv, reps, all_pairs=False)
            samples[nbytes][0].append(pair)
            samples[nbytes][1].append(_exchange(c, send, recv, reps, True) if concurrent else pair)
            if details:
                c.barrier()
                samples[nbytes][2].append(_pingpong(c, recv, reps))
    c.barrier()
    exchange = [float(np.median(samples[m][0])) for m in sizes]
    all_pairs = [float(np.median(samples[m][1])) for m in sizes]
    pingpong = [float(np.median(samples[m][2])) if c.rank == 0 and details else None
                for m in sizes]
    in_ring = _reduce_in_ring(c, gamma_sizes, repeats)
    result = np.full(6, np.nan)  # alpha, beta, gamma, node_bw, stamp, rendezvous alpha
    gamma_times = None
    if c.rank == 0:
        result[4] = datetime.datetime.now().timestamp()  # rank 0's clock stamps every rank's copy
        gamma_add, gamma_times = _gamma(gamma_sizes, repeats)
        gamma = max(gamma_add, float(np.median(in_ring)))
        alpha, beta, rendezvous = fit_eager_rendezvous(sizes, exchange)
        slope = fit_eager_rendezvous(sizes, all_pairs)[1]
        result[5] = np.nan if rendezvous is None else rendezvous
        busy = min(c.size - c.size % 2, rpn)  # ranks of one node exchanging at once
        result[:4] = alpha, beta, gamma, busy / slope
    broadcast(c, result, root=0)
    alpha, beta, gamma, node_bw, when, rendezvous = (float(v) for v in result)
    two_regimes = math.isfinite(rendezvous)
    stamp = datetime.datetime.fromtimestamp(when).isoformat(timespec="seconds")
    profile = Profile("calibrated", alpha=alpha, beta=beta, gamma=gamma, ranks_per_node=rpn,
                      node_bw=node_bw, eager_max=SMALL_MAX if two_regimes else None,
                      rendezvous_alpha=rendezvous if two_regimes else None,
                      source=f"calibrate() on {platform.node()}: {c.size} ranks, {rpn} per node, "
                             f"Sendrecv exchange {min(sizes)}-{max(sizes)} B, alpha from sizes "
                             f"<= {SMALL_MAX} B, beta from >= {LARGE_MIN} B (medians), gamma the "
                             f"larger of np.add and the adds in ring steps, {stamp}")
    if not details:
        return profile
    return profile, {"sizes": list(sizes), "exchange": exchange, "all_pairs": all_pairs,
                     "pingpong": pingpong,
                     "gamma_sizes": list(gamma_sizes), "gamma_times": gamma_times,
                     "gamma_in_ring": in_ring}
