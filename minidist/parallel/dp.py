"""The "dp" strategy: a single master, as ``torch.nn.DataParallel`` runs it across devices.

Every rank computes on its shard; rank 0 gathers every rank's gradients into persistent
rows (``"grad-gather"``), sums them in place, divides, and alone runs the optimizer; then
it broadcasts the new parameters (``"param-broadcast"``), with the step's status (global
sample count, number of ranks whose gradients were not finite: tail.py) riding at the end, so every
rank raises or skips alike. Options: ``scatter_inputs`` (rank 0 scatters the global batch,
phase ``"scatter"``), ``loss_on_root`` (rootloss.py: outputs gathered to rank 0, loss
there, output gradients scattered back), ``find_unused_parameters`` (used flags ride in
the gradient messages). Errors rank 0 alone sees are raised on every rank. Details:
docs/dp.md.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..comm import gather_to_root
from .base import ParallelModel, broadcast_tensors, sync_initial_state
from .rootloss import root_loss, scatter_or_fail
from .tail import all_finite


class DataParallel(ParallelModel):
    """``DataParallel(module, comm, *, broadcast="linear", scatter_inputs=False,
    loss_on_root=False, average="samples", check_replicas=False, find_unused_parameters=False,
    nonfinite="raise")``; see the module docstring. Rank 0 is the master."""

    strategy = "dp"

    def __init__(self, module, comm, *, broadcast: str = "linear", scatter_inputs: bool = False,
                 loss_on_root: bool = False, average: str = "samples", check_replicas: bool = False,
                 find_unused_parameters: bool = False, nonfinite: str = "raise"):
        if broadcast not in ("linear", "binomial"):  # before the model takes an id
            raise ValueError(f"broadcast must be 'linear' or 'binomial' (got {broadcast!r})")
        super().__init__(module, comm, average=average, check_replicas=check_replicas, nonfinite=nonfinite)
        self.broadcast_algorithm = broadcast
        self.scatter_inputs, self.loss_on_root = bool(scatter_inputs), bool(loss_on_root)
        self.find_unused_parameters = bool(find_unused_parameters)
        self._buffers = None  # the persistent gather buffers (`_gather_buffers`)
        self._status = (None, 0)  # rank 0: (global samples, ranks with non-finite gradients)
        self._root_losses = []  # model.loss results since the last step
        self._scattered_rows = None  # rank 0: rows of the last scattered input batch
        sync_initial_state(module, comm, "dp")
        self._restart_peaks()

    # ---- inputs ----------------------------------------------------------------------------
    def _scatter_rows(self, value, expected_rows: int | None = None):
        """Scatter rank 0's `value` by rows; rank 0 checks it has `expected_rows` rows (when
        given) and, if not, every rank raises the same ValueError."""
        comm = self.comm
        problem = None
        if comm.rank == 0:
            if value is None:
                problem = "got None"
            else:
                value = np.ascontiguousarray(value.data if isinstance(value, Tensor) else value)
                rows = value.shape[0] if value.ndim else None
                if expected_rows is not None and rows != expected_rows:
                    problem = (f"model.scatter(y) got {'a 0-d y' if rows is None else f'{rows} target rows'} "
                               f"but the last model(x) scattered {expected_rows} input rows: pass one "
                               "target row per input row")
        with comm.phase("scatter"):
            return scatter_or_fail(comm, value, problem, "dp with scatter_inputs=True: rank 0 must pass "
                                   "the global batch to model(x) and model.scatter(y), the other ranks None")

    def forward(self, x, *args, **kwargs):
        if not self.scatter_inputs:
            return super().forward(x, *args, **kwargs)
        piece = self._scatter_rows(x)
        if self.comm.rank == 0:
            self._scattered_rows = len(x)  # what model.scatter(y) must match
        return super().forward(Tensor(piece), *args, **kwargs)

    def scatter(self, y):
        """This rank's rows of the global `y` held by rank 0 (None elsewhere), split as the
        inputs are (phase ``"scatter"``). For targets under ``scatter_inputs=True``."""
        return self._scatter_rows(y, self._scattered_rows if self.comm.rank == 0 else None)

    # ---- loss on the root ---------------------------------------------------------------------
    def loss(self, loss_fn, out, target):
        """``loss_fn(all_outputs, target)`` computed on rank 0 over the gathered outputs;
        returns a `RootLoss` whose ``backward()`` scatters the output gradients back.
        `target` is the global batch's targets on rank 0 (ignored elsewhere)."""
        if not self.loss_on_root:
            raise RuntimeError("model.loss() is the loss_on_root flow: wrap with "
                               "wrap(net, 'dp', comm, loss_on_root=True)")
        self._root_losses.append(root_loss(self.comm, loss_fn, out, target, self._scratch))
        return self._root_losses[-1]

    # ---- the step ------------------------------------------------------------------------------
    def _gather_buffers(self) -> list:
        """[(layout, rows, tail or None)], kept across steps: per dtype, this rank's packed
        message (gradients, used flags, and on the first one the status tail) is
        ``rows[0]``; rank 0's `rows` has a row per rank, where the gather lands."""
        if self._buffers is None:
            self._buffers = []
            for i, layout in enumerate(self._grad_layouts()):
                tail = self._status_tail(counts=self._counted) if i == 0 else None
                width = layout.count + (len(layout.tensors) if self.find_unused_parameters else 0)
                rows = np.zeros((self.comm.size if self.comm.rank == 0 else 1,
                                 width + (tail.length if tail else 0)), layout.dtype)
                self._buffers.append((layout, rows, tail))
        return self._buffers

    @property
    def _counted(self) -> bool:
        """The sample counts ride in the messages, and rank 0 divides by their sum."""
        return self.average == "samples" and not self.loss_on_root

    def _pack(self) -> list:
        """This rank's gradients (times its sample count when `_counted`), used flags and
        status tail, into row 0 of each buffer."""
        if self.loss_on_root and not self._root_losses:
            raise RuntimeError("dp with loss_on_root=True: compute the loss with model.loss(...) "
                               "before step()")
        weight = float(self._samples) if self._counted else None
        buffers, finite = self._gather_buffers(), True
        for layout, rows, _ in buffers:
            count, mine = layout.count, rows[0]
            layout.pack_grads(out=mine[:count], scale=weight)
            if self.find_unused_parameters:
                layout.used_flags(out=mine[count:count + len(layout.tensors)])
            finite = finite and (self.nonfinite == "ignore" or all_finite(mine[:count]))
        if buffers:
            _, rows, tail = buffers[0]
            self._write_tail(tail, rows[0, rows.shape[1] - tail.length:], finite)
        return buffers

    def _before_update(self, optimizer) -> None:
        """Gather every rank's message into rank 0's rows and reduce them in place into row
        0 (N-1 additions of one message each, in rank order: charged as a reduction, as
        hub's). Rank 0 alone knows the status here; the others learn it in `_after_update`."""
        comm = self.comm
        self._status = (None, 0)
        for layout, rows, tail in self._pack():
            with comm.phase("grad-gather"):
                gather_to_root(comm, rows[0], 0, out=rows if comm.rank == 0 else None, sum_rows=True)
            if comm.rank == 0 and tail is not None:
                self._status = tail.read(rows[0, rows.shape[1] - tail.length:])
        if comm.rank == 0:
            self._skip = self._verdict(*self._status) is not None
            if not self._skip:
                self._unpack(self._status[0])

    def _unpack(self, total: float | None) -> None:
        """Rank 0: the summed gradients, divided (by the global count, by N under
        ``average="ranks"``, by nothing under `loss_on_root`), into ``.grad``."""
        divisor = None if self.loss_on_root else (total if self._counted else float(self.comm.size))
        for layout, rows, _ in self._buffers:
            count, summed = layout.count, rows[0]
            layout.unpack_grads(summed[:count], divisor)
            if self.find_unused_parameters:
                layout.drop_unused_grads(summed[count:count + len(layout.tensors)])

    def _update(self, optimizer) -> None:
        if self.comm.rank == 0:  # the other ranks' optimizers are never stepped: no state there
            optimizer.step()

    def _after_update(self, optimizer) -> None:
        """Rank 0's parameters to every rank, with the status riding at the end of the first
        message; then every rank acts on it (raise, or count the skip)."""
        comm = self.comm
        for loss in self._root_losses:  # rank 0: the gathered outputs are no longer held
            loss.release()
        self._root_losses = []
        params = list(self.module.parameters())
        tail = self._buffers[0][2] if self._buffers and self._buffers[0][2].length else None
        carried = None
        if tail is not None and params:
            carried = np.zeros(tail.length, params[0].data.dtype)  # the first message's dtype
            if comm.rank == 0:
                tail.encode(carried, *self._status)
        with comm.phase("param-broadcast"):
            broadcast_tensors(comm, params, 0, self.broadcast_algorithm, self._scratch, tail=carried,
                              reuse="dp.param-broadcast")
        self._broadcast_buffers(self.broadcast_algorithm)
        if carried is not None:
            self._skip = False
            self._judge(*tail.read(carried))

    def _persistent_comm_bytes(self) -> int:
        return sum(rows.nbytes for _, rows, _ in self._buffers or [])

