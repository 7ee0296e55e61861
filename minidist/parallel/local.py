"""The "local" strategy: one process trains on the whole global batch. No communication;
it is the reference every other strategy is compared against."""
from __future__ import annotations

from .base import ParallelModel
from .tail import all_finite


class LocalModel(ParallelModel):
    """``LocalModel(module, comm=None)``: the model itself, with the shared wrapper
    interface (``model(x)``, ``model.step(optimizer)`` = ``optimizer.step()``).

    `comm` is optional and unused for communication (compare.py runs the reference on
    every rank; each trains its own copy on the full global batch)."""

    strategy = "local"

    def __init__(self, module, comm=None, *, check_replicas: bool = False, nonfinite: str = "raise"):
        if check_replicas:
            raise ValueError("check_replicas has no meaning for strategy 'local' (there are no replicas)")
        super().__init__(module, comm, average="samples", check_replicas=False, nonfinite=nonfinite)

    def _before_update(self, optimizer) -> None:
        """``nonfinite``: the same check as the distributed strategies, on this process's
        gradients (it reports itself as rank 0)."""
        if self.nonfinite != "ignore":
            grads = [p.grad for p in self.module.parameters() if p.grad is not None]
            self._locally_finite = all(all_finite(g) for g in grads)
            self._judge(None, 0 if self._locally_finite else 1)
