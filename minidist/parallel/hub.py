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

``find_unused_parameters=True`` (PyTorch's name, as DDP's): each rank appends one element
per parameter (1 where it has a ``.grad``, 0 where it is None) to its packed gradients, so
the flags are summed by the same ``"grad-reduce"`` and sent back by the same
``"grad-broadcast"`` (no extra message; each grows by one element per parameter). A
parameter no rank has a gradient for keeps ``.grad`` None on every rank, so the optimizer
skips it (no momentum or weight decay step), as without hub. Without it (the default) such
a parameter gets a zero gradient and is updated.

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
    broadcast_buffers=True, average="samples", check_replicas=False,
    find_unused_parameters=False)``.

    `reduce` / `broadcast` pick the rooted algorithms ("linear" or "binomial")."""

    strategy = "hub"

    def __init__(self, module, comm, *, reduce: str = "linear", broadcast: str = "linear",
                 broadcast_buffers: bool = True, average: str = "samples", check_replicas: bool = False,
                 find_unused_parameters: bool = False):
        super().__init__(module, comm, average=average, check_replicas=check_replicas)
        for name, value in (("reduce", reduce), ("broadcast", broadcast)):
            if value not in ("linear", "binomial"):
                raise ValueError(f"{name} must be 'linear' or 'binomial' (got {value!r})")
        self.reduce_algorithm, self.broadcast_algorithm = reduce, broadcast
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
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
            count = layout.count
            flags = len(layout.tensors) if self.find_unused_parameters else 0
            flat = np.empty(count + flags, layout.dtype)  # gradients, then the used flags
            layout.pack_grads(out=flat[:count], scale=float(self._samples) if weighted else None)
            if flags:
                layout.used_flags(out=flat[count:])
            with self._scratch.hold(2 * flat.nbytes):  # the packed gradients and the result
                with comm.phase("grad-reduce"):
                    reduced = reduce_to_root(comm, flat, 0, "sum", self.reduce_algorithm)
                if comm.rank == 0:
                    np.divide(reduced[:count], total, out=flat[:count])
                    flat[count:] = reduced[count:]  # the flags stay counts of ranks
                with comm.phase("grad-broadcast"):
                    broadcast(comm, flat, 0, self.broadcast_algorithm)
            layout.unpack_grads(flat[:count])
            if flags:
                layout.drop_unused_grads(flat[count:])

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
