"""Timed primitives that both calibrations share: an exchange, a ping-pong, an add.

`minidist calibrate` (`minidist.cost.calibrate`) and compare's quick calibration
(`minidist.cost.machine`) time the same things, with these functions, and only fit them
differently. The one idea: time what a ring step does. An exchange is a Sendrecv both
ways at once after a barrier, the buffers swapping roles as a ring forwards what it
received; gamma is what the adds cost inside ring steps, not only np.add alone. Buffers
are filled (np.zeros pages all map the kernel's one zero page and look cache-fast).
Method: docs/cost-model.md.
"""
from __future__ import annotations

from time import perf_counter

import numpy as np

from ..comm import mpi_allreduce
from ..comm.tags import TAG_CALIBRATE


def repeats_for(nbytes, repeats):
    """Fewer repetitions for big messages: about 64 MiB moved per size at most."""
    return int(max(3, min(repeats, (64 << 20) // max(nbytes, 1))))


def pingpong(c, buf, repeats, warmup=2):
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


def exchange(c, sbuf, rbuf, repeats, all_pairs=False, warmup=2, tag=TAG_CALIBRATE):
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
            c.sendrecv(sbuf, partner, rbuf, partner, tag)
            sbuf, rbuf = rbuf, sbuf  # send what was just received, as a ring step forwards it
            if i >= warmup:
                times.append(perf_counter() - t0)
    slowest = np.array([np.median(times) if times else 0.0])
    return float(mpi_allreduce(c, slowest, "max")[0])


def add_seconds(nbytes, repeats) -> np.ndarray:
    """Seconds of each of `repeats` calls of np.add(a, b, out=a) on `nbytes` of float32,
    after one untimed call that touches the pages."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.ones_like(a)
    np.add(a, b, out=a)
    times = np.empty(repeats)
    for i in range(repeats):
        t0 = perf_counter()
        np.add(a, b, out=a)
        times[i] = perf_counter() - t0
    return times


def reduce_in_ring(c, sizes, repeats, warmup=1):
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
        for i in range(warmup + repeats_for(nbytes, repeats)):
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
