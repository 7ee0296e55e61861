"""Per-rank memory accounting of a training step, split the way the strategies differ.

``parameters`` and ``gradients`` (every strategy: a full replica); ``optimizer`` (its
state: under dp only rank 0 holds any, under hub and ddp every rank does);
``comm_buffers`` (kept across steps: DDP's buckets, dp's gather rows); ``comm_peak`` (the
most communication scratch held at once from the end of the previous step to the end of
this one, forward and backward included: the collectives' own, from the ledger, plus the
strategy's transient buffers, e.g. dp-root's gathered outputs on rank 0; the two peaks are
added, an upper bound when they do not coincide); ``total`` = parameters + gradients +
optimizer + comm_buffers; ``peak`` = the largest ``total + comm_peak`` so far.
Activations are not counted (the same for every strategy on the same shard).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass
class MemoryReport:
    parameters: int
    gradients: int
    optimizer: int
    comm_buffers: int
    comm_peak: int
    total: int
    peak: int

    def as_dict(self) -> dict:
        return asdict(self)


class ScratchMeter:
    """Counts a strategy's own transient communication buffers: ``with meter.hold(n):``
    while `n` bytes are held. `peak` is the most held at once since `reset_peak`."""

    def __init__(self):
        self.current = 0
        self.peak = 0

    @contextmanager
    def hold(self, nbytes: int):
        self.take(nbytes)
        try:
            yield
        finally:
            self.give_back(nbytes)

    def take(self, nbytes: int) -> None:
        """Count `nbytes` as held from now on (until `give_back`)."""
        self.current += int(nbytes)
        self.peak = max(self.peak, self.current)

    def give_back(self, nbytes: int) -> None:
        self.current -= int(nbytes)

    def reset_peak(self) -> None:
        self.peak = self.current


def optimizer_nbytes(optimizer) -> int:
    """The optimizer's state bytes (``state_nbytes()`` when it has one, else 0)."""
    if optimizer is None:
        return 0
    nbytes = getattr(optimizer, "state_nbytes", None)
    return int(nbytes()) if callable(nbytes) else 0


def measure(module, optimizer=None, *, comm=None, comm_buffers: int = 0, scratch_peak: int = 0,
            previous_peak: int = 0) -> MemoryReport:
    """A `MemoryReport` of `module` and `optimizer` now. `scratch_peak` is the strategy's
    own transient peak; the ledger's scratch peak of `comm` is added to it."""
    params = sum(p.data.nbytes for p in module.parameters())
    grads = sum(p.grad.nbytes for p in module.parameters() if p.grad is not None)
    opt = optimizer_nbytes(optimizer)
    ledger_peak = comm.ledger.peak_temp_bytes if comm is not None else 0
    comm_peak = int(scratch_peak) + int(ledger_peak)
    total = params + grads + opt + int(comm_buffers)
    return MemoryReport(params, grads, opt, int(comm_buffers), comm_peak, total,
                        max(int(previous_peak), total + comm_peak))


def reset_ledger_peak(comm) -> None:
    """Restart the ledger's scratch peak from what is held now, keeping its message
    counters (which the ledger's `reset` would clear)."""
    if comm is not None:
        comm.ledger.reset_peak()
