"""`Trainer`: the small training loop the scripts and labs share.

The one loop every strategy has (forward, loss, zero_grad, backward, ``model.step(opt)``)
over this rank's shard; accuracy over a global evaluation set split across ranks::

    comm = Communicator()
    net = MLP(2, 64, 3, rng=0)
    model = wrap(net, "ddp", comm)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = distributed_loader(X, y, batch_size=32, comm=comm, seed=0)
    history = Trainer(model, opt, comm=comm).fit(loader, epochs=5, eval_data=(X_test, y_test))

`train_step` is one step of that loop for any wrapped model (dp's ``scatter_inputs`` and
``loss_on_root`` included). The trainer draws no random numbers: the seeds are the
model's and the loader's (``DistributedSampler(seed=...)``, one permutation per epoch).
"""
from __future__ import annotations

from time import perf_counter

import numpy as np

from ..autograd import Tensor, no_grad
from ..comm import allreduce
from ..comm.timeline import span
from ..data import DataLoader
from ..nn import functional as F
from .sampler import DistributedSampler, local_shard


def distributed_loader(X, y, batch_size: int, comm=None, *, seed: int = 0, shuffle: bool = True,
                       drop_last: bool = False, pad: bool = True) -> DataLoader:
    """A DataLoader over this rank's `DistributedSampler` share of ``(X, y)`` (the whole
    set, shuffled with `seed`, without `comm`)."""
    if comm is None or comm.size == 1:
        return DataLoader(X, y, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    sampler = DistributedSampler(len(X), comm.size, comm.rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last, pad=pad)
    sampler.num_batches(batch_size, drop_last)  # every rank must run the same number of steps
    return DataLoader(X, y, batch_size=batch_size, drop_last=drop_last, sampler=sampler)


def train_step(model, optimizer, x, y, loss_fn=None, timeline=None):
    """One training step of a wrapped model: forward, loss, ``zero_grad``, backward,
    ``model.step(optimizer)``. What `x` and `y` are depends on the flow:

    * dp with ``scatter_inputs=True``: the GLOBAL batch on rank 0 (anything elsewhere);
      rank 0 scatters both (and ``loss_on_root`` may be set too: the loss is then rank 0's);
    * dp with ``loss_on_root=True`` alone: `x` is this rank's shard, `y` the GLOBAL targets
      on rank 0 (ignored elsewhere);
    * every other strategy: this rank's shard of both.

    `loss_fn(out, y)` defaults to ``F.cross_entropy``. Returns ``(out, y_local, loss)``:
    this rank's outputs, its targets (None under ``loss_on_root`` without
    ``scatter_inputs``: only rank 0 has targets there) and the loss (a `RootLoss` under
    ``loss_on_root``: the global loss on rank 0, nan elsewhere). `timeline` (a
    `minidist.comm.timeline.Timeline`; default: the model's communicator's, if any) gets
    forward, backward and step spans.
    """
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    scatter_inputs = getattr(model, "scatter_inputs", False)
    loss_on_root = getattr(model, "loss_on_root", False)
    root = model.comm is None or model.comm.rank == 0
    if timeline is None:  # spans for the trace, when the communicator records them
        timeline = getattr(model.comm, "timeline", None)
    with span(timeline, "forward"):
        if scatter_inputs:
            out = model(x if root else None)
            y_local = model.scatter(y if root else None)
        else:
            out = model(x if isinstance(x, Tensor) else Tensor(x))
            y_local = None if loss_on_root else y
        if loss_on_root:
            loss = model.loss(loss_fn, out, y if root else None)
        else:
            loss = loss_fn(out, y_local)
    model.zero_grad()
    with span(timeline, "backward"):
        loss.backward()
    with span(timeline, "step"):
        model.step(optimizer)
    return out, y_local, loss


class Trainer:
    """``Trainer(model, optimizer, *, comm=None, loss_fn=F.cross_entropy, progress=True)``.

    `model` is a wrapped model (`minidist.parallel.wrap`) in the standard loop: dp's
    ``scatter_inputs`` / ``loss_on_root`` flows take global batches, which a loader of
    this rank's shard does not give (run them with `train_step`).
    """

    def __init__(self, model, optimizer, *, comm=None, loss_fn=None, progress: bool = True):
        if getattr(model, "scatter_inputs", False) or getattr(model, "loss_on_root", False):
            raise ValueError("Trainer runs the standard loop over this rank's shards; dp with "
                             "scatter_inputs or loss_on_root takes global batches: call "
                             "minidist.parallel.trainer.train_step(model, opt, x, y) in your own loop")
        self.model, self.optimizer, self.comm = model, optimizer, comm
        self.loss_fn = F.cross_entropy if loss_fn is None else loss_fn
        self.show = bool(progress) and (comm is None or comm.rank == 0)

    def train_epoch(self, loader, epoch: int = 0) -> dict:
        """One pass over `loader`; returns ``{epoch, loss, steps, seconds}`` with the mean
        of this rank's batch losses."""
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        bar = _progress(loader, self.show, f"epoch {epoch}")
        losses, t0 = [], perf_counter()
        for batch in bar:
            _, _, loss = train_step(self.model, self.optimizer, batch[0], batch[1], self.loss_fn)
            losses.append(float(loss.item()))
            if self.show:
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if self.show:
            bar.close()
        return {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                "steps": len(losses), "seconds": perf_counter() - t0}

    def evaluate(self, X, y, batch_size: int = 512) -> float:
        """Accuracy of the model on ``(X, y)``: each rank scores its contiguous share, the
        correct counts are summed across ranks (phase ``"eval"``). Eval mode, no graph."""
        module = getattr(self.model, "module", self.model)
        Xs, ys = local_shard((X, y), self.comm) if self.comm is not None else (X, y)
        was_training = module.training
        module.eval()
        correct = 0
        with no_grad():
            for start in range(0, len(Xs), batch_size):
                logits = module(Tensor(Xs[start:start + batch_size]))
                correct += int((logits.data.argmax(axis=1) == ys[start:start + batch_size]).sum())
        module.train(was_training)
        counts = np.array([correct, len(Xs)], dtype=np.int64)
        if self.comm is not None and self.comm.size > 1:
            with self.comm.phase("eval"):
                allreduce(self.comm, counts, "sum", "ring")
        return float(counts[0] / max(counts[1], 1))

    def fit(self, loader, epochs: int, eval_data=None) -> list[dict]:
        """Train for `epochs`; after each, evaluate on `eval_data` ``(X, y)`` if given.
        Returns one dict per epoch (`train_epoch`'s, plus ``accuracy``)."""
        history = []
        for epoch in range(epochs):
            record = self.train_epoch(loader, epoch)
            if eval_data is not None:
                record["accuracy"] = self.evaluate(*eval_data)
            history.append(record)
        return history


def _progress(iterable, show: bool, desc: str):
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)
