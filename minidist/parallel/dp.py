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

``find_unused_parameters=True`` (PyTorch's name, as DDP's): each rank appends one element
per parameter (1 where it has a ``.grad``, 0 where it is None) to what it sends in
``"grad-gather"`` (no extra message; each grows by one element per parameter); a parameter
no rank has a gradient for keeps ``.grad`` None on rank 0, so its optimizer skips it (no
momentum or weight decay step), as without dp. Without it (the default) such a parameter
gets a zero gradient and is updated.

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

Errors found on rank 0 alone are raised on every rank, with the same message, so that no
rank is left waiting (even under a plain ``mpiexec python script.py``): a bad global batch
under `scatter_inputs` (every rank raises in the same scatter); missing targets, shards off
the ``np.array_split`` layout or a failing `loss_fn` under `loss_on_root` (rank 0 still
receives every rank's outputs, raises in ``model.loss``, and the others raise in
``loss.backward()``, where they wait for rank 0's output gradients); no sample seen by any
rank before ``step()`` (`agree_on_samples`). Each costs messages only when it happens.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..autograd.function import is_grad_enabled
from ..comm import gather_to_root, scatter
from ..comm.checks import chunk_bounds
from ..comm.tags import TAG_OUTPUT_GATHER
from .base import ParallelModel, agree_on_samples, broadcast_tensors, broadcast_text, sync_initial_state
from .sampler import shard_sizes



class DataParallel(ParallelModel):
    """``DataParallel(module, comm, *, broadcast="linear", scatter_inputs=False,
    loss_on_root=False, average="samples", check_replicas=False, find_unused_parameters=False)``;
    see the module
    docstring. Rank 0 is the master."""

    strategy = "dp"

    def __init__(self, module, comm, *, broadcast: str = "linear", scatter_inputs: bool = False,
                 loss_on_root: bool = False, average: str = "samples", check_replicas: bool = False,
                 find_unused_parameters: bool = False):
        super().__init__(module, comm, average=average, check_replicas=check_replicas)
        if broadcast not in ("linear", "binomial"):
            raise ValueError(f"broadcast must be 'linear' or 'binomial' (got {broadcast!r})")
        self.broadcast_algorithm = broadcast
        self.scatter_inputs, self.loss_on_root = bool(scatter_inputs), bool(loss_on_root)
        self.find_unused_parameters = bool(find_unused_parameters)
        self._root_counts = np.zeros(comm.size)  # per-rank samples scattered since the last step
        self._root_losses = 0  # model.loss calls since the last step
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
        if self.comm.rank == 0 and self.module.training and is_grad_enabled():  # training samples only
            self._root_counts += shard_sizes(len(x), self.comm.size)
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
        comm = self.comm
        local = np.ascontiguousarray(out.data)
        self._root_losses += 1
        if comm.rank != 0:
            with comm.phase("output-gather"):
                comm.send(local, 0, TAG_OUTPUT_GATHER)
            return RootLoss(comm, None, None, out, self._scratch)
        with comm.phase("output-gather"):
            gathered, problem = _gather_rows(comm, local, None if target is None else len(target))
        if problem is not None:
            with comm.phase("output-grad-scatter"):  # the others learn it in loss.backward()
                tell_scatter_failed(comm, f"dp loss_on_root: {problem}")
            raise ValueError(f"dp loss_on_root: {problem}")
        leaf = Tensor(gathered, requires_grad=True)
        try:
            with self._scratch.hold(gathered.nbytes):  # rank 0 holds every rank's outputs
                value = loss_fn(leaf, target)
        except Exception as exc:  # the user's loss failed: the others must not wait for rank 0
            with comm.phase("output-grad-scatter"):
                tell_scatter_failed(comm, f"dp loss_on_root: the loss failed on rank 0: "
                                          f"{type(exc).__name__}: {exc}")
            raise
        return RootLoss(comm, value, leaf, out, self._scratch)

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
        silent = int(np.count_nonzero(counts[1:] == 0)) if comm.rank == 0 else None
        agree_on_samples(comm, self._samples, counts.sum() if comm.rank == 0 else None, silent, "dp")
        return counts / counts.sum() if comm.rank == 0 else None

    def _before_update(self, optimizer) -> None:
        comm = self.comm
        weights = self._weights()
        for layout in self._grad_layouts():
            count = layout.count
            flags = len(layout.tensors) if self.find_unused_parameters else 0
            flat = np.empty(count + flags, layout.dtype)  # gradients, then the used flags
            layout.pack_grads(out=flat[:count])
            if flags:
                layout.used_flags(out=flat[count:])
            # rank 0 holds every rank's gradients at once: the master's memory load
            held = flat.nbytes * (comm.size + 1 if comm.rank == 0 else 1)
            with self._scratch.hold(held):
                with comm.phase("grad-gather"):
                    stacked = gather_to_root(comm, flat, root=0)
                if comm.rank == 0:
                    layout.unpack_grads(weights @ stacked[:, :count])
                    if flags:
                        layout.drop_unused_grads(stacked[:, count:].sum(axis=0))

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

    def __init__(self, comm, value, leaf, local_out, scratch):
        self._comm, self._value, self._leaf, self._out = comm, value, leaf, local_out
        self._scratch = scratch

    @property
    def data(self):
        return self._value.data if self._value is not None else np.array(np.nan)

    def item(self) -> float:
        return float(self.data)

    def backward(self) -> None:
        comm = self._comm
        if comm.rank != 0:  # raises rank 0's error if it failed (in model.loss or here)
            with comm.phase("output-grad-scatter"):
                piece = scatter_or_fail(comm, None)
            self._out.backward(piece.astype(self._out.dtype, copy=False))
            return
        try:
            self._value.backward()
        except Exception as exc:
            with comm.phase("output-grad-scatter"):
                tell_scatter_failed(comm, f"dp loss_on_root: the loss's backward failed on rank 0: "
                                          f"{type(exc).__name__}: {exc}")
            raise
        grad_all = self._leaf.grad if self._leaf.grad is not None else np.zeros_like(self._leaf.data)
        grad_all = np.ascontiguousarray(grad_all)
        with self._scratch.hold(self._leaf.data.nbytes + grad_all.nbytes):  # all outputs, all gradients
            with comm.phase("output-grad-scatter"):
                piece = scatter(comm, grad_all, root=0)
        self._out.backward(piece.astype(self._out.dtype, copy=False))


# ---- rank 0's errors, raised on every rank ---------------------------------------------------------
def tell_scatter_failed(comm, message: str) -> None:
    """Rank 0, instead of a `scatter` the other ranks are waiting in: make their scatter
    fail (minidist.comm's error header), then send them `message` (`scatter_or_fail` raises
    it there). Call it under the scatter's phase."""
    try:
        scatter(comm, None, root=0)  # rejected: every other rank gets the error header
    except (TypeError, ValueError):
        pass
    broadcast_text(comm, message, 0)


def scatter_or_fail(comm, value, problem: str | None = None, context: str = ""):
    """``scatter(comm, value, root=0)``, but when rank 0 has a `problem` (or scatter
    rejects its `value`), every rank raises ``ValueError("<context> (<problem>)")``, with
    rank 0's text. Non-roots pass anything as `value` and `problem`."""
    if comm.rank != 0:
        try:
            return scatter(comm, None, root=0)
        except ValueError:  # with out=None, only rank 0's rejection makes a non-root's scatter raise
            raise ValueError(broadcast_text(comm, None, 0)) from None
    if problem is None:
        try:
            return scatter(comm, value, root=0)
        except (TypeError, ValueError) as exc:  # scatter sent the others its error header
            problem, cause = str(exc), exc
    else:
        cause = None
        try:
            scatter(comm, None, root=0)
        except (TypeError, ValueError):
            pass
    message = f"{context} ({problem})"
    broadcast_text(comm, message, 0)
    raise ValueError(message) from cause


def _gather_rows(comm, local: np.ndarray, total_rows):
    """Rank 0's side of the output gather (the others just send theirs): ``(rows,
    problem)``. `rows` stacks every rank's output rows in rank order, rank r's at
    ``chunk_bounds(total_rows, N)[r]``; `problem` is None, or what was wrong (then `rows`
    is None). Every rank's message is received whatever happens, so no rank is left
    sending. Same messages as `gather_to_root` (N-1 into the root), but shards may differ
    by one row."""
    rest, row_bytes = local.shape[1:], local[:1].nbytes or 1
    bounds = chunk_bounds(int(total_rows), comm.size) if total_rows is not None else None
    problem = None if bounds is not None else "rank 0 must pass the global targets to model.loss (got None)"
    if bounds is not None and local.shape[0] != bounds[0][1]:
        problem = (f"rank 0 has {local.shape[0]} output rows but its share of the {total_rows} targets is "
                   f"{bounds[0][1]}: shards must follow np.array_split's layout of the global batch")
    out = np.empty((int(total_rows),) + rest, local.dtype) if problem is None else None
    if out is not None:
        out[: bounds[0][1]] = local
    spare = None  # once something is wrong, the remaining rows are received here and dropped
    for source in range(1, comm.size):
        if problem is None:
            start, stop = bounds[source]
            buf = out[start:stop]
        else:
            if spare is None:
                rows = max(local.shape[0], bounds[0][1] if bounds else 0)
                spare = np.empty((rows,) + rest, local.dtype)
            buf = spare
        try:
            got = comm.recv(buf, source, TAG_OUTPUT_GATHER)
        except ValueError:  # more rows than `buf` holds: the message is consumed all the same
            got = None
        if problem is None and got != buf.nbytes:
            sent = "more output rows" if got is None else f"{got // row_bytes} output rows"
            problem = (f"rank {source} sent {sent} but its share of the {total_rows} targets is "
                       f"{stop - start}: shards must follow np.array_split's layout of the global batch")
    return out, problem
