"""DDP's gradient buckets and a non-blocking ring all-reduce that advances step by step.

Bucket assignment follows PyTorch's reducer: parameters in *reverse* registration order
(the order backward usually produces their gradients), one open bucket per dtype; a
bucket is closed as soon as its size reaches the current limit (the parameter that
crosses it is included). The first bucket's limit is ``first_bucket_bytes`` (PyTorch:
1 MiB, when the cap is left at its default), the rest ``bucket_bytes``.

`RingAllreduceOp` is `minidist.comm.ring_allreduce` cut into its 2(N-1) steps on
``isend``/``irecv``: the same chunks (np.array_split layout), the same order of additions
(partial from the left + own), so the result is bit-identical to the blocking ring and
the ledger shows the same messages. A step is posted, then completed later by
`advance` (non-blocking test, or a blocking wait), which posts the next one. Each bucket
uses its own tag, so several buckets can be in flight between the same neighbours.
"""
from __future__ import annotations

from time import perf_counter

import numpy as np
from mpi4py import MPI

from ..comm.checks import chunk_bounds

TAG_BUCKET_BASE = 20_000  # bucket k uses tag TAG_BUCKET_BASE + k (the comm layer uses >= 30000)


def assign_buckets(params, bucket_bytes: int, first_bucket_bytes: int) -> list[list]:
    """Group `params` (registration order) into buckets of parameters, reverse order, one
    dtype per bucket; bucket 0 is the one whose gradients are expected first."""
    limits = [int(first_bucket_bytes), int(bucket_bytes)]
    buckets, open_ = [], {}  # dtype -> [params, bytes, limit index]
    for p in reversed(list(params)):
        cur = open_.setdefault(p.data.dtype, [[], 0, 0])
        cur[0].append(p)
        cur[1] += p.data.nbytes
        if cur[1] >= limits[cur[2]]:
            buckets.append(cur[0])
            open_[p.data.dtype] = [[], 0, 1]
    buckets.extend(cur[0] for cur in open_.values() if cur[0])
    return buckets


def request_done(req) -> bool:
    """Non-blocking completion test of a `minidist.comm.Request` that records the message
    in the ledger when it completes."""
    if req.done:
        return True
    test = getattr(req, "test", None)
    if test is not None:
        return bool(test())
    # the comm layer's Request has wait() only: test its MPI request and let it record
    status = MPI.Status()
    t0 = perf_counter()
    if req._req.Test(status):
        req._finish(status, perf_counter() - t0)
        return True
    return False


class RingAllreduceOp:
    """A ring all-reduce (sum) of the 1-D array `flat`, in place, in 2(N-1) steps.

    ``start()`` posts step 0; ``advance(block)`` completes the current step if it can
    (``block=True``: waits for it), applies it and posts the next; ``wait()`` runs to the
    end. `done` tells when `flat` holds the sum on this rank. Scratch (two chunk-sized
    receive buffers) is reported to the ledger while the operation runs.
    """

    def __init__(self, comm, flat: np.ndarray, tag: int):
        self.comm, self.flat, self.tag = comm, flat, tag
        self.size, self.rank = comm.size, comm.rank
        self.bounds = chunk_bounds(flat.size, self.size)
        self.total_steps = 2 * (self.size - 1)
        self.step = 0
        self.done = self.size == 1
        self._requests = []
        longest = -(-flat.size // self.size)
        self._buffers = (np.empty(longest, flat.dtype), np.empty(longest, flat.dtype))
        self._scratch = 2 * longest * flat.dtype.itemsize
        self._outgoing = None
        self._incoming = None
        self._phase = comm.current_phase

    def _chunk(self, index):
        start, stop = self.bounds[index % self.size]
        return self.flat[start:stop]

    def start(self) -> "RingAllreduceOp":
        if not self.done:
            self.comm.ledger.alloc(self._scratch)
            self._outgoing = self._chunk(self.rank - 1)  # our share of chunk rank-1 starts its chain
            self._post()
        return self

    def _post(self) -> None:
        s, n, rank = self.step, self.size, self.rank
        right, left = (rank + 1) % n, (rank - 1) % n
        if s < n - 1:  # reduce-scatter: partial sums travel right, one chunk per step
            start, stop = self.bounds[(rank - s - 2) % n]
            self._incoming = self._buffers[s % 2][: stop - start]
            outgoing = self._outgoing
        else:  # all-gather: finished chunks travel right, received in place
            g = s - (n - 1)
            outgoing = self._chunk(rank - g)
            self._incoming = self._chunk(rank - g - 1)
        with self.comm.phase(self._phase):
            self._requests = [self.comm.irecv(_wire(self._incoming), left, self.tag),
                              self.comm.isend(_wire(outgoing), right, self.tag)]

    def _complete_step(self) -> None:
        s, n = self.step, self.size
        if s < n - 1:
            own = self._chunk(self.rank - s - 2)
            np.add(self._incoming, own, out=self._incoming)  # partial from the left + ours
            self._outgoing = self._incoming
            if s == n - 2:  # the last partial is the finished chunk `rank`
                self._chunk(self.rank)[...] = self._incoming
        self.step += 1
        if self.step == self.total_steps:
            self.done = True
            self.comm.ledger.free(self._scratch)
        else:
            self._post()

    def advance(self, block: bool = False) -> bool:
        """Complete as many steps as are ready (``block``: at least one, waiting for it).
        Returns whether the operation is finished."""
        while not self.done:
            if block:
                self.comm.waitall(self._requests)
                block = False
            elif not all(request_done(r) for r in self._requests):
                break
            self._complete_step()
        return self.done

    def advance_to(self, steps: int) -> bool:
        """Block until at least `steps` steps are complete (or the operation is done)."""
        while not self.done and self.step < steps:
            self.advance(block=True)
        return self.done

    def wait(self) -> None:
        self.advance_to(self.total_steps)


def _wire(a: np.ndarray) -> np.ndarray:
    """The bytes of `a` as MPI sees them (any dtype, float16 included)."""
    return a.view(np.uint8)
