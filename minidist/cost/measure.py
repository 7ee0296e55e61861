"""Timed primitives that both calibrations share: an exchange, a ping-pong, an add.

`minidist calibrate` (`minidist.cost.calibrate`) and compare's quick calibration
(`minidist.cost.machine`) time the same things, with these functions, and only fit them
differently. The one idea: time what a training step does, on buffers in the state a
step leaves them (`StepBuffers`): the block sent was written just before (by backward,
or by the add before it), the block received into is an untouched one or the one sent
the exchange before (as a ring's steps alternate), an add's operand is out of the
caches. Cache-hot buffers made a 2 MiB exchange look twice as fast, and an add four
times as fast, as they are inside a step. An exchange is a Sendrecv both ways at once
after a barrier. Method: docs/cost-model.md.
"""
from __future__ import annotations

from time import perf_counter

import numpy as np

from ..comm import mpi_allreduce
from ..comm.tags import TAG_CALIBRATE


POOL_BYTES = 40 << 20  # over the last-level cache (32 MiB here): a block comes back cold
MAX_BLOCKS = 64


class StepBuffers:
    """Blocks of `nbytes` as a training step leaves them, for the timed calls. `pair` gives
    a block to send, written just now (as backward writes gradients), and one to receive
    into, as a two-rank ring's steps alternate: a block nothing has touched since the pool
    last came round (step 1 receives into scratch), then the block sent the pair before
    (step 2 receives into the half its peer has just read). `written_and_cold` gives a
    written block and an untouched one. Each block is an array of its own, allocated as a
    step allocates its buffers (measured here: MPICH moved a 2 MiB block cut from one big
    array 1.7x as fast as a 2 MiB array). Filled with ones (np.zeros pages map the
    kernel's one zero page and look cache-fast)."""

    def __init__(self, nbytes: int, dtype=np.uint8, pool_bytes: int = POOL_BYTES):
        # each two pairs take three blocks: a block comes round again after pool_bytes of others
        count = min(MAX_BLOCKS, -(-pool_bytes // max(int(nbytes), 1)) + 3)
        length = int(nbytes) // np.dtype(dtype).itemsize
        self._blocks = [np.ones(length, dtype) for _ in range(count)]
        self._source = np.ones(length, dtype)
        self._next = 0
        self._sent = None

    def _take(self):
        block = self._blocks[self._next]
        self._next = (self._next + 1) % len(self._blocks)
        return block

    def pair(self):
        """(send, receive): a block just written, and alternately an untouched block or the
        block the previous pair sent."""
        send = self._take()
        np.copyto(send, self._source)
        if self._sent is None:  # a ring's first step: into scratch
            receive, self._sent = self._take(), send
        else:  # its second: into the half it sent the step before
            receive, self._sent = self._sent, None
        return send, receive

    def written_and_cold(self):
        """(written, cold): the next two blocks of the pool, the first just overwritten."""
        written = self._take()
        np.copyto(written, self._source)
        return written, self._take()


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


def exchange(c, nbytes, repeats, all_pairs=False, warmup=2, tag=TAG_CALIBRATE):
    """Seconds (median) of one Sendrecv of `nbytes` with partner ``rank ^ 1`` (both
    directions at once, as in a ring step): ranks 0 and 1 only, or every pair at once
    (`all_pairs`). Each exchange sends a block written just before and receives into a
    block as a two-rank ring's steps do (`StepBuffers.pair`, outside the timed part).
    The slowest rank's time is returned on every rank."""
    partner = c.rank ^ 1
    busy = partner < c.size and (all_pairs or c.rank < 2)
    buffers = StepBuffers(nbytes) if busy else None
    times = []
    for i in range(warmup + repeats):
        sbuf, rbuf = buffers.pair() if busy else (None, None)
        c.barrier()  # every exchange starts cold, as a collective call does (and OSU times)
        if busy:
            t0 = perf_counter()
            c.sendrecv(sbuf, partner, rbuf, partner, tag)
            if i >= warmup:
                times.append(perf_counter() - t0)
    slowest = np.array([np.median(times) if times else 0.0])
    return float(mpi_allreduce(c, slowest, "max")[0])


def add_seconds(nbytes, repeats) -> np.ndarray:
    """Seconds of each of `repeats` calls of np.add(a, b, out=a) on `nbytes` of float32, as
    a reduction runs in a step: `b` just written (received), `a` out of the caches."""
    buffers = StepBuffers(nbytes, np.float32)
    times = np.empty(repeats)
    for i in range(repeats):
        b, a = buffers.written_and_cold()
        t0 = perf_counter()
        np.add(a, b, out=a)
        times[i] = perf_counter() - t0
    return times
