"""The "dp" strategy: a single master, as ``torch.nn.DataParallel`` runs it across devices.

Every rank computes on its shard; rank 0 collects every gradient, averages, and alone runs
the optimizer (so only rank 0 holds optimizer state); then it sends the new parameters to
everyone. Per step:

* ``"shard-sizes"`` (only when rank 0 cannot know them: ``average="samples"`` without
  `scatter_inputs`): each rank's sample count, gathered to rank 0;
* ``"grad-gather"``: ``gather_to_root`` of each rank's gradients (one flat buffer per
  dtype): rank 0 receives N-1 full gradients and holds N at once;
* rank 0 averages them, weighted by sample counts (``average="samples"``: the result is
  the global-batch gradient even for uneven shards) or equally (``"ranks"``), and steps;
* ``"param-broadcast"``: rank 0's parameters to every rank (``broadcast="linear"`` or
  ``"binomial"``); ``"buffer-broadcast"``: its buffers (BatchNorm statistics), if any.

Options:

``scatter_inputs=True``: rank 0 holds the global batch and scatters it (phase
``"scatter"``, ``np.array_split`` rows, a small header per rank). Rank 0 calls
``model(x_global)``, the others ``model(None)``; each gets the output of its own shard.
Targets follow the same split with ``y = model.scatter(y_global)`` (None elsewhere)::

    out = model(x if comm.rank == 0 else None)
    y = model.scatter(y if comm.rank == 0 else None)
    loss = F.cross_entropy(out, y)

``loss_on_root=True``: torch.nn.DataParallel's real flow. The outputs are gathered to
rank 0 (``"output-gather"``), the loss is computed there on the global batch, the output
gradients are scattered back (``"output-grad-scatter"``), each rank back-propagates its
piece, and the gradients gathered to rank 0 are *summed* (the loss already averaged over
the global batch). The loop reads::

    out = model(x)                               # this rank's shard
    loss = model.loss(F.cross_entropy, out, y)   # y: the GLOBAL targets on rank 0
    model.zero_grad()
    loss.backward()
    model.step(opt)

`RootLoss.item()` is the global loss on rank 0 and nan elsewhere. Shards must follow the
``np.array_split`` layout of the global batch (what `scatter_inputs`, `local_shard` and
``DistributedSampler(pad=False)`` give).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..comm import gather_to_root, scatter
from ..comm.checks import chunk_bounds, mismatch_error
from .base import ParallelModel, broadcast_tensors, require_samples, sync_initial_state
from .sampler import shard_sizes

TAG_OUTPUT_GATHER = 20_500


class DataParallel(ParallelModel):
    """``DataParallel(module, comm, *, broadcast="linear", scatter_inputs=False,
    loss_on_root=False, average="samples", check_replicas=False)``; see the module
    docstring. Rank 0 is the master."""

    strategy = "dp"

    def __init__(self, module, comm, *, broadcast: str = "linear", scatter_inputs: bool = False,
                 loss_on_root: bool = False, average: str = "samples", check_replicas: bool = False):
        super().__init__(module, comm, average=average, check_replicas=check_replicas)
        if broadcast not in ("linear", "binomial"):
            raise ValueError(f"broadcast must be 'linear' or 'binomial' (got {broadcast!r})")
        self.broadcast_algorithm = broadcast
        self.scatter_inputs, self.loss_on_root = bool(scatter_inputs), bool(loss_on_root)
        self._root_counts = np.zeros(comm.size)  # per-rank samples scattered since the last step
        self._root_losses = 0  # model.loss calls since the last step
        sync_initial_state(module, comm, "dp")

    # ---- inputs ----------------------------------------------------------------------------
    def _scatter_rows(self, value):
        comm = self.comm
        if comm.rank == 0:
            if value is None:
                raise ValueError("dp with scatter_inputs=True: rank 0 must pass the global batch "
                                 "(the other ranks pass None)")
            value = np.ascontiguousarray(value.data if isinstance(value, Tensor) else value)
        with comm.phase("scatter"):
            return scatter(comm, value, root=0)

    def forward(self, x, *args, **kwargs):
        if not self.scatter_inputs:
            return super().forward(x, *args, **kwargs)
        if self.comm.rank == 0:
            self._root_counts += shard_sizes(len(x), self.comm.size)
        piece = self._scatter_rows(x)
        return super().forward(Tensor(piece), *args, **kwargs)

    def scatter(self, y):
        """This rank's rows of the global `y` held by rank 0 (None elsewhere), split as the
        inputs are (phase ``"scatter"``). For targets under ``scatter_inputs=True``."""
        return self._scatter_rows(y)

    # ---- loss on the root ---------------------------------------------------------------------
    def loss(self, loss_fn, out, target):
        """``loss_fn(all_outputs, target)`` computed on rank 0 over the gathered outputs;
        returns a `RootLoss` whose ``backward()`` scatters the output gradients back.
        `target` is the global batch's targets on rank 0 (ignored elsewhere)."""
        if not self.loss_on_root:
            raise RuntimeError("model.loss() is the loss_on_root flow: wrap with "
                               "wrap(net, 'dp', comm, loss_on_root=True)")
        comm = self.comm
        local = np.ascontiguousarray(out.data)
        leaf = value = None
        with comm.phase("output-gather"):
            if comm.rank == 0:
                if target is None:
                    raise ValueError("dp loss_on_root: rank 0 must pass the global targets to model.loss")
                gathered = _gather_rows(comm, local, len(target))
                leaf = Tensor(gathered, requires_grad=True)
                value = loss_fn(leaf, target)
            else:
                _gather_rows(comm, local, None)
        self._root_losses += 1
        return RootLoss(comm, value, leaf, out)

    # ---- the step ------------------------------------------------------------------------------
    def _weights(self) -> np.ndarray | None:
        """Rank 0's weight for each rank's gradient (None on the others)."""
        comm = self.comm
        if self.loss_on_root:
            if self._root_losses == 0:
                raise RuntimeError("dp with loss_on_root=True: compute the loss with model.loss(...) "
                                   "before step()")
            return np.ones(comm.size) if comm.rank == 0 else None
        if self.average == "ranks":
            return np.full(comm.size, 1.0 / comm.size) if comm.rank == 0 else None
        if self.scatter_inputs:
            counts = self._root_counts
        else:
            with comm.phase("shard-sizes"):
                gathered = gather_to_root(comm, np.array([float(self._samples)]), root=0)
            counts = gathered[:, 0] if comm.rank == 0 else None
        if comm.rank != 0:
            return None
        return counts / require_samples(counts.sum(), "dp")

    def _before_update(self, optimizer) -> None:
        comm = self.comm
        weights = self._weights()
        for layout in self._grad_layouts():
            flat = layout.pack_grads()
            # rank 0 holds every rank's gradients at once: the master's memory load
            held = flat.nbytes * (comm.size + 1 if comm.rank == 0 else 1)
            with self._scratch.hold(held):
                with comm.phase("grad-gather"):
                    stacked = gather_to_root(comm, flat, root=0)
                if comm.rank == 0:
                    layout.unpack_grads(weights @ stacked)

    def _update(self, optimizer) -> None:
        if self.comm.rank == 0:  # the other ranks' optimizers are never stepped: no state there
            optimizer.step()

    def _after_update(self, optimizer) -> None:
        comm = self.comm
        self._root_counts[:] = 0
        self._root_losses = 0
        with comm.phase("param-broadcast"):
            broadcast_tensors(comm, list(self.module.parameters()), 0, self.broadcast_algorithm, self._scratch)
        self._broadcast_buffers(self.broadcast_algorithm)


class RootLoss:
    """What ``DataParallel.loss`` returns. ``backward()``: rank 0 back-propagates the loss
    to the gathered outputs, their gradient rows are scattered back (phase
    ``"output-grad-scatter"``) and every rank back-propagates its piece through its
    replica. ``item()`` / ``data``: the loss on rank 0, nan elsewhere."""

    def __init__(self, comm, value, leaf, local_out):
        self._comm, self._value, self._leaf, self._out = comm, value, leaf, local_out

    @property
    def data(self):
        return self._value.data if self._value is not None else np.array(np.nan)

    def item(self) -> float:
        return float(self.data)

    def backward(self) -> None:
        comm = self._comm
        grad_all = None
        if comm.rank == 0:
            self._value.backward()
            grad_all = self._leaf.grad if self._leaf.grad is not None else np.zeros_like(self._leaf.data)
            grad_all = np.ascontiguousarray(grad_all)
        with comm.phase("output-grad-scatter"):
            piece = scatter(comm, grad_all, root=0)
        self._out.backward(piece.astype(self._out.dtype, copy=False))


def _gather_rows(comm, local: np.ndarray, total_rows):
    """Rank 0: the rows of every rank stacked in rank order, rank r holding rows
    ``chunk_bounds(total_rows, N)[r]``; the others send theirs and get None. Same messages
    as `gather_to_root` (N-1 into the root), but shards may differ by one row."""
    if comm.rank != 0:
        comm.send(local, 0, TAG_OUTPUT_GATHER)
        return None
    bounds = chunk_bounds(int(total_rows), comm.size)
    if local.shape[0] != bounds[0][1]:
        raise ValueError(f"dp loss_on_root: rank 0 has {local.shape[0]} output rows but its share of the "
                         f"{total_rows} targets is {bounds[0][1]}: shards must follow np.array_split's layout")
    out = np.empty((int(total_rows),) + local.shape[1:], local.dtype)
    out[: bounds[0][1]] = local
    for source in range(1, comm.size):
        start, stop = bounds[source]
        got = comm.recv(out[start:stop], source, TAG_OUTPUT_GATHER)
        if got != out[start:stop].nbytes:
            raise mismatch_error("dp output gather (shards must follow np.array_split's layout of the "
                                 "global targets)", 0, source, got, out[start:stop].nbytes)
    return out
