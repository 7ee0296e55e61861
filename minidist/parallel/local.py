"""The "local" strategy: one process trains on the whole global batch. No communication;
it is the reference every other strategy is compared against."""
from __future__ import annotations

from .base import ParallelModel


class LocalModel(ParallelModel):
    """``LocalModel(module, comm=None)``: the model itself, with the shared wrapper
    interface (``model(x)``, ``model.step(optimizer)`` = ``optimizer.step()``).

    `comm` is optional and unused for communication (compare.py runs the reference on
    every rank; each trains its own copy on the full global batch)."""

    strategy = "local"

    def __init__(self, module, comm=None, *, check_replicas: bool = False):
        super().__init__(module, comm, average="samples", check_replicas=False)
        if check_replicas:
            raise ValueError("check_replicas has no meaning for strategy 'local' (there are no replicas)")
