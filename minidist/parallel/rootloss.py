"""dp's ``loss_on_root`` flow (what torch.nn.DataParallel does): the outputs gathered to
rank 0, the loss computed there on the global batch, the output gradients scattered back.

Also here, since the flow needs them: raising an error that rank 0 alone sees on every
rank instead (`tell_scatter_failed`, `scatter_or_fail`), which `scatter_inputs` uses too.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..comm import scatter
from ..comm.checks import chunk_bounds
from ..comm.tags import TAG_OUTPUT_GATHER
from .base import broadcast_text


def root_loss(comm, loss_fn, out, target, scratch) -> "RootLoss":
    """dp's loss_on_root: every rank's outputs gathered to rank 0 (phase
    ``"output-gather"``), ``loss_fn(all_outputs, target)`` there. Rank 0 holds the gathered
    outputs, then their gradients, until the backward's scatter ends (counted in `scratch`,
    its memory report). A problem on rank 0 is raised on every rank (`tell_scatter_failed`)."""
    local = np.ascontiguousarray(out.data)
    if comm.rank != 0:
        with comm.phase("output-gather"):
            comm.send(local, 0, TAG_OUTPUT_GATHER)
        return RootLoss(comm, None, None, out, scratch)
    with comm.phase("output-gather"):
        gathered, problem = _gather_rows(comm, local, None if target is None else len(target))
    if problem is not None:
        with comm.phase("output-grad-scatter"):  # the others learn it in loss.backward()
            tell_scatter_failed(comm, f"dp loss_on_root: {problem}")
        raise ValueError(f"dp loss_on_root: {problem}")
    leaf = Tensor(gathered, requires_grad=True)
    held = RootLoss(comm, None, leaf, out, scratch)  # holds the gathered outputs from here
    try:
        held._value = loss_fn(leaf, target)
    except Exception as exc:  # the user's loss failed: the others must not wait for rank 0
        held.release()
        with comm.phase("output-grad-scatter"):
            tell_scatter_failed(comm, f"dp loss_on_root: the loss failed on rank 0: "
                                      f"{type(exc).__name__}: {exc}")
        raise
    return held


class RootLoss:
    """What ``DataParallel.loss`` returns. ``backward()``: rank 0 back-propagates the loss
    to the gathered outputs, their gradient rows are scattered back (phase
    ``"output-grad-scatter"``) and every rank back-propagates its piece through its
    replica. ``item()`` / ``data``: the loss on rank 0, nan elsewhere."""

    def __init__(self, comm, value, leaf, local_out, scratch):
        self._comm, self._value, self._leaf, self._out = comm, value, leaf, local_out
        self._scratch, self._held = scratch, 0
        if leaf is not None:
            self._hold(leaf.data.nbytes)

    def _hold(self, nbytes: int) -> None:
        self._scratch.take(nbytes)
        self._held += nbytes

    def release(self) -> None:
        """Stop counting the gathered outputs and their gradients (after the scatter, or
        at ``step()`` when backward never ran)."""
        self._scratch.give_back(self._held)
        self._held = 0

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
            self.release()
            with comm.phase("output-grad-scatter"):
                tell_scatter_failed(comm, f"dp loss_on_root: the loss's backward failed on rank 0: "
                                          f"{type(exc).__name__}: {exc}")
            raise
        grad_all = self._leaf.grad if self._leaf.grad is not None else np.zeros_like(self._leaf.data)
        grad_all = np.ascontiguousarray(grad_all)
        self._hold(grad_all.nbytes)  # all outputs and all their gradients, at once
        try:
            with comm.phase("output-grad-scatter"):
                piece = scatter(comm, grad_all, root=0)
        finally:
            self.release()
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
