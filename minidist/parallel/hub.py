"""The "hub" strategy: a parameter-server-like star. Every rank sends its gradients to rank
0, which reduces them; rank 0 sends the average back; every rank updates its own copy.

Per step, one flat message per dtype: ``"grad-reduce"`` (``reduce_to_root`` of each rank's
packed gradients, times its sample count under ``average="samples"``), then
``"grad-broadcast"`` (rank 0 divides by the global count, or by N, and broadcasts). The
first message carries the step's status tail (tail.py: the count, the non-finite flag),
so every rank learns from the broadcast the total and how many ranks had non-finite
gradients. Rank 0 handles N-1 full gradients in each direction: the hub's load.
``find_unused_parameters=True``: one used-flag per parameter rides in the same messages; a
parameter no rank used keeps ``.grad`` None. ``broadcast_buffers=True``: rank 0's buffers are broadcast at every
forward with gradients enabled (training or eval mode), phase ``"buffer-broadcast"``.
"""
from __future__ import annotations

import numpy as np

from ..autograd.function import is_grad_enabled
from ..autograd.workspace import scratch as workspace_array
from ..comm import broadcast, reduce_to_root
from .base import ParallelModel, sync_initial_state
from .tail import all_finite


class HubParallel(ParallelModel):
    """``HubParallel(module, comm, *, reduce="linear", broadcast="linear",
    broadcast_buffers=True, average="samples", check_replicas=False,
    find_unused_parameters=False, nonfinite="raise")``.

    `reduce` / `broadcast` pick the rooted algorithms ("linear" or "binomial")."""

    strategy = "hub"

    def __init__(self, module, comm, *, reduce: str = "linear", broadcast: str = "linear",
                 broadcast_buffers: bool = True, average: str = "samples", check_replicas: bool = False,
                 find_unused_parameters: bool = False, nonfinite: str = "raise"):
        for name, value in (("reduce", reduce), ("broadcast", broadcast)):  # before the model takes an id
            if value not in ("linear", "binomial"):
                raise ValueError(f"{name} must be 'linear' or 'binomial' (got {value!r})")
        super().__init__(module, comm, average=average, check_replicas=check_replicas, nonfinite=nonfinite)
        self.reduce_algorithm, self.broadcast_algorithm = reduce, broadcast
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        sync_initial_state(module, comm, "hub")
        self._restart_peaks()

    def forward(self, x, *args, **kwargs):
        if self.broadcast_buffers and is_grad_enabled():
            self._broadcast_buffers(self.broadcast_algorithm)
        return super().forward(x, *args, **kwargs)

    def _pack(self) -> list:
        """[(layout, packed, tail or None)]: per dtype, this rank's gradients (times its
        sample count under ``average="samples"``), the used flags, and on the first
        message the status tail."""
        weight = float(self._samples) if self.average == "samples" else None
        messages, finite = [], True
        for i, layout in enumerate(self._grad_layouts()):
            count, flags = layout.count, len(layout.tensors) if self.find_unused_parameters else 0
            tail = self._status_tail() if i == 0 else None
            flat = workspace_array(f"hub.message{i}", (count + flags + (tail.length if tail else 0),), layout.dtype)
            layout.pack_grads(out=flat[:count], scale=weight)
            if flags:
                layout.used_flags(out=flat[count:count + flags])
            finite = finite and (self.nonfinite == "ignore" or all_finite(flat[:count]))
            messages.append((layout, flat, tail))
        if messages:
            layout, flat, tail = messages[0]
            self._write_tail(tail, flat[flat.size - tail.length:], finite)
        return messages

    def _before_update(self, optimizer) -> None:
        comm = self.comm
        messages = self._pack()
        divisor = float(comm.size)  # average="ranks"; under "samples" the count, from the first tail
        with self._scratch.hold(sum(flat.nbytes for _, flat, _ in messages)):  # the packed messages
            for layout, flat, tail in messages:
                count = layout.count
                with self._scratch.hold(flat.nbytes), comm.phase("grad-reduce"):  # ... and the result
                    reduced = reduce_to_root(comm, flat, 0, "sum", self.reduce_algorithm)
                if comm.rank == 0:
                    flat[count:] = reduced[count:]  # flags and tail stay sums over ranks
                    if tail is not None and tail.counts:
                        divisor = float(reduced[flat.size - tail.length]) or 1.0  # 0: _judge raises
                    np.divide(reduced[:count], divisor, out=flat[:count])
                with comm.phase("grad-broadcast"):
                    broadcast(comm, flat, 0, self.broadcast_algorithm)
        if messages:  # every rank now holds the summed tail: the same verdict everywhere
            _, flat, tail = messages[0]
            self._judge(*tail.read(flat[flat.size - tail.length:]))
        for layout, flat, _ in [] if self._skip else messages:
            count = layout.count
            layout.unpack_grads(flat[:count])
            if self.find_unused_parameters:
                layout.drop_unused_grads(flat[count:count + len(layout.tensors)])
