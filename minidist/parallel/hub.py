"""The "hub" strategy: a parameter-server-like star. Every rank sends its gradients to rank
0, which reduces them; rank 0 sends the average back; every rank updates its own copy.

Per step (one flat message per dtype):

* ``"shard-sizes"`` (``average="samples"`` only): each rank's sample count is reduced to
  rank 0 (one float64). A rank that saw no sample sends a flag instead (2**-20: the
  fractional part of the sum tells rank 0 how many such ranks there are); each of them
  then asks rank 0 whether anyone saw a sample (`agree_on_samples`), so that when nobody
  did, every rank raises the same error instead of rank 0 alone. A normal step pays
  nothing for this;
* ``"grad-reduce"``: ``reduce_to_root`` of each rank's gradients (pre-multiplied by its
  sample count under ``average="samples"``);
* ``"grad-broadcast"``: rank 0 divides by the total count (or by the number of ranks) and
  broadcasts the average;
* then every rank runs its own optimizer on identical gradients, so replicas stay
  byte-identical. Rank 0 handles N-1 full gradients in each direction: the hub's load.

With ``broadcast_buffers=True`` rank 0's buffers (BatchNorm running statistics) are
broadcast at each training forward (phase ``"buffer-broadcast"``), as DDP does.
"""
from __future__ import annotations

import numpy as np

from ..autograd.function import is_grad_enabled
from ..comm import broadcast, reduce_to_root
from .base import ParallelModel, agree_on_samples, sync_initial_state

# what a rank that saw no sample reports as its count: the sum stays exact (integer
# counts below 2**32, fewer than 2**20 flags), and its fraction counts the flags
NO_SAMPLE_FLAG = 2.0 ** -20


class HubParallel(ParallelModel):
    """``HubParallel(module, comm, *, reduce="linear", broadcast="linear",
    broadcast_buffers=True, average="samples", check_replicas=False)``.

    `reduce` / `broadcast` pick the rooted algorithms ("linear" or "binomial")."""

    strategy = "hub"

    def __init__(self, module, comm, *, reduce: str = "linear", broadcast: str = "linear",
                 broadcast_buffers: bool = True, average: str = "samples", check_replicas: bool = False):
        super().__init__(module, comm, average=average, check_replicas=check_replicas)
        for name, value in (("reduce", reduce), ("broadcast", broadcast)):
            if value not in ("linear", "binomial"):
                raise ValueError(f"{name} must be 'linear' or 'binomial' (got {value!r})")
        self.reduce_algorithm, self.broadcast_algorithm = reduce, broadcast
        self.broadcast_buffers = bool(broadcast_buffers)
        sync_initial_state(module, comm, "hub")
        self._restart_peaks()

    def forward(self, x, *args, **kwargs):
        if self.broadcast_buffers and is_grad_enabled():
            self._broadcast_buffers(self.broadcast_algorithm)
        return super().forward(x, *args, **kwargs)

    def _before_update(self, optimizer) -> None:
        comm = self.comm
        weighted = self.average == "samples"
        total = float(comm.size)
        if weighted:
            total = self._total_samples()
        for layout in self._grad_layouts():
            flat = layout.pack_grads(scale=float(self._samples) if weighted else None)
            with self._scratch.hold(2 * flat.nbytes):  # the packed gradients and the result
                with comm.phase("grad-reduce"):
                    reduced = reduce_to_root(comm, flat, 0, "sum", self.reduce_algorithm)
                if comm.rank == 0:
                    np.divide(reduced, total, out=flat)
                with comm.phase("grad-broadcast"):
                    broadcast(comm, flat, 0, self.broadcast_algorithm)
            layout.unpack_grads(flat)

    def _total_samples(self) -> float:
        """The global sample count on rank 0 (0.0 elsewhere); raises on every rank when it
        is zero."""
        comm = self.comm
        count = np.array([float(self._samples) if self._samples else NO_SAMPLE_FLAG])
        with comm.phase("shard-sizes"):
            summed = reduce_to_root(comm, count, 0, "sum", self.reduce_algorithm)
        total = silent = None
        if comm.rank == 0:
            total = float(np.floor(summed[0]))
            silent = int(round((float(summed[0]) - total) / NO_SAMPLE_FLAG)) - (self._samples == 0)
        agree_on_samples(comm, self._samples, total, silent, "hub")
        return total if comm.rank == 0 else 0.0
