"""Measure this machine's alpha, beta, gamma and node bandwidth: a calibrated `Profile`.

Three measurements, every rank taking part in the same calls:

1. ping-pong between ranks 0 and 1 (the others wait): half the round trip of an m-byte
   message, for m over `sizes`; a least-squares fit of ``t = alpha + beta * m`` weighted by
   1/t (so the small sizes set alpha and the large ones beta);
2. all ranks at once, each exchanging m bytes with its partner ``rank ^ 1`` (what a ring
   step does): the slope ``s`` of the slowest rank, from which
   ``node_bw = c / s`` with ``c`` the ranks of one node that were busy, so that the
   model's node term ``c * m / node_bw`` reproduces what was seen;
3. gamma: the slope of the time of ``np.add(a, b, out=a)`` (float32) against the bytes
   of ``a`` (256 KiB to 16 MiB), on rank 0 alone.

Messages go through a private `Communicator` over the same MPI communicator (same code
path as the collectives, ledger included, but the caller's ledger stays untouched).
Rank 0 fits; every rank returns the same profile.
"""
from __future__ import annotations

import datetime
import platform
from time import perf_counter

import numpy as np
from mpi4py import MPI

from .communicator import Communicator
from .profiles import Profile

__all__ = ["calibrate", "fit_alpha_beta", "DEFAULT_SIZES", "QUICK_SIZES"]

DEFAULT_SIZES = tuple(8 << (2 * k) for k in range(12))      # 8 B .. 32 MiB, x4 apart
QUICK_SIZES = (8, 1024, 64 << 10, 1 << 20)
GAMMA_SIZES = (256 << 10, 1 << 20, 4 << 20, 16 << 20)
QUICK_GAMMA_SIZES = (64 << 10, 256 << 10, 1 << 20)
_TAG = 31_000


def fit_alpha_beta(sizes, times):
    """Least-squares fit of ``t = alpha + beta * m``, weighted by 1/t (relative error).

    Returns ``(alpha, beta)``, both > 0: if the fit gives a non-positive value (noise),
    alpha falls back to the smallest time and beta to the slope between the extremes."""
    m = np.asarray(sizes, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if m.shape != t.shape or m.size < 2:
        raise ValueError(f"need at least two (size, time) pairs of equal length "
                         f"(got {m.size} sizes, {t.size} times)")
    w = 1.0 / t
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([w, w * m], axis=1), np.ones_like(t), rcond=None)
    if not alpha > 0:
        alpha = float(t.min())
    if not beta > 0:
        i, j = int(m.argmin()), int(m.argmax())
        beta = max((t[j] - t[i]) / max(m[j] - m[i], 1.0), 1e-15)
    return float(alpha), float(beta)


def _repeats_for(nbytes, repeats):
    # Fewer repetitions for big messages: about 64 MiB moved per size at most.
    return int(max(3, min(repeats, (64 << 20) // max(nbytes, 1))))


def _pingpong(c, nbytes, repeats, warmup=2):
    """Half round-trip seconds (median) between ranks 0 and 1; None on other ranks."""
    buf = np.zeros(nbytes, dtype=np.uint8)
    times = []
    for i in range(warmup + repeats):
        if c.rank == 0:
            t0 = perf_counter()
            c.send(buf, 1, _TAG)
            c.recv(buf, 1, _TAG)
            if i >= warmup:
                times.append((perf_counter() - t0) / 2)
        elif c.rank == 1:
            c.recv(buf, 0, _TAG)
            c.send(buf, 0, _TAG)
    return float(np.median(times)) if times else None


def _exchange(c, nbytes, repeats, warmup=2):
    """Seconds (median) of one m-byte exchange with partner rank ^ 1, all pairs at once;
    the slowest rank's time is returned on every rank."""
    partner = c.rank ^ 1
    sbuf = np.zeros(nbytes, dtype=np.uint8)
    rbuf = np.empty_like(sbuf)
    times = []
    c.mpi.Barrier()
    if partner < c.size:
        for i in range(warmup + repeats):
            t0 = perf_counter()
            c.sendrecv(sbuf, partner, rbuf, partner, _TAG)
            if i >= warmup:
                times.append(perf_counter() - t0)
    local = np.array([np.median(times) if times else 0.0])
    slowest = np.empty_like(local)
    c.mpi.Allreduce(local, slowest, op=MPI.MAX)
    return float(slowest[0])


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


def _ranks_per_node(mpi_comm):
    node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    local = np.array([node.Get_size()], dtype=np.int64)
    node.Free()
    most = np.empty_like(local)
    mpi_comm.Allreduce(local, most, op=MPI.MAX)
    return int(most[0])


def calibrate(comm, sizes=None, repeats=30, quick=False, base=None, details=False, passes=3):
    """Measure alpha, beta, gamma and the node bandwidth; return a `Profile`.

    Every rank must call it (it is collective). A few seconds with the defaults; with
    ``quick=True`` (tests) a tiny sweep of well under a second.

    Args:
        comm: a `Communicator` (or an mpi4py communicator).
        sizes: message sizes in bytes for the ping-pong and the exchange
            (default `DEFAULT_SIZES`, 8 B to 32 MiB; `QUICK_SIZES` when quick).
        repeats: timed repetitions per size (fewer for big messages), after 2 warm-ups,
            spread over `passes` interleaved sweeps (a burst of load from a neighbour
            then spoils a little of every size instead of all of one).
        passes: sweeps over the sizes (1 when quick).
        quick: tiny sweep for tests.
        base: with a single rank there is nobody to ping-pong with; if `base` (a
            `Profile`) is given, its alpha/beta/node_bw are kept and only gamma is
            measured, else a ValueError says so.
        details: also return the raw measurements, as ``(profile, dict)``.

    Returns:
        ``Profile(name="calibrated", alpha, beta, gamma, ranks_per_node, node_bw, source)``,
        the same on every rank.
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
            raise ValueError("calibrate needs at least 2 ranks for the ping-pong that measures "
                             "alpha and beta (got a communicator of size 1): run it under "
                             "`mpiexec -n 2 python ...`, or pass base=<Profile> to keep that "
                             "profile's alpha/beta and measure only gamma here")
        gamma, gamma_times = _gamma(gamma_sizes, repeats)
        profile = base.with_(name=f"{base.name}+gamma", gamma=gamma,
                             source=f"{base.source} | gamma measured by calibrate() on "
                                    f"{platform.node()} (1 rank, {stamp})")
        return (profile, {"gamma_sizes": list(gamma_sizes), "gamma_times": gamma_times}) \
            if details else profile

    rpn = _ranks_per_node(mpi_comm)
    samples = {m: ([], []) for m in sizes}  # size -> (ping-pong medians, exchange medians)
    for _ in range(passes):
        for nbytes in sizes:
            reps = max(3, _repeats_for(nbytes, repeats) // passes)
            mpi_comm.Barrier()
            samples[nbytes][0].append(_pingpong(c, nbytes, reps))
            samples[nbytes][1].append(_exchange(c, nbytes, reps))
    mpi_comm.Barrier()
    pingpong = [float(np.median(samples[m][0])) if c.rank == 0 else None for m in sizes]
    exchange = [float(np.median(samples[m][1])) for m in sizes]
    result = np.zeros(5)
    gamma_times = None
    if c.rank == 0:
        result[4] = datetime.datetime.now().timestamp()  # rank 0's clock stamps every rank's copy
        gamma, gamma_times = _gamma(gamma_sizes, repeats)
        alpha, beta = fit_alpha_beta(sizes, pingpong)
        slope = fit_alpha_beta(sizes, exchange)[1]
        busy = min(c.size - c.size % 2, rpn)  # ranks of one node exchanging at once
        result[:4] = alpha, beta, gamma, busy / slope
    mpi_comm.Barrier()
    mpi_comm.Bcast(result, root=0)
    alpha, beta, gamma, node_bw, when = (float(v) for v in result)
    stamp = datetime.datetime.fromtimestamp(when).isoformat(timespec="seconds")
    profile = Profile("calibrated", alpha=alpha, beta=beta, gamma=gamma, ranks_per_node=rpn,
                      node_bw=node_bw,
                      source=f"calibrate() on {platform.node()}: {c.size} ranks, {rpn} per node, "
                             f"ping-pong/exchange {min(sizes)}-{max(sizes)} B, {stamp}")
    if not details:
        return profile
    return profile, {"sizes": list(sizes), "pingpong": pingpong, "exchange": exchange,
                     "gamma_sizes": list(gamma_sizes), "gamma_times": gamma_times}
