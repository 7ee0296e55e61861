"""minidist.comm: a Communicator that records every message in a ledger, and every
collective written from its point-to-point calls. NumPy and mpi4py only: this package
never imports autograd, nn, parallel or cost.

    from minidist.comm import Communicator, ring_allreduce
    comm = Communicator()                  # MPI.COMM_WORLD
    with comm.phase("grad-allreduce"):
        ring_allreduce(comm, grads, op="mean")
    comm.ledger.totals("grad-allreduce")   # bytes/messages sent and received, seconds

Dtypes, reduction ops, the non-blocking ring, fail-stop, the watchdog and debug mode:
docs/comm.md and docs/reliability.md.
"""
import importlib

# allreduce.py, ring.py and ledger.py load without MPI; they are imported here (and the name
# `allreduce` is the function, not its module). The rest load on first use, so the cost
# model (which reads `comm.auto`) and the CLI's parser do not initialise MPI through mpi4py.
from .allreduce import (allreduce, choose_allreduce_algorithm, mpi_allreduce,  # noqa: E402
                        rabenseifner_allreduce, recursive_doubling_allreduce)
from .ledger import Ledger  # noqa: E402
from .ring import ring_allgather, ring_allreduce, ring_reduce_scatter  # noqa: E402

_LAZY = {"Communicator": "communicator", "Request": "communicator", "RingAllreduce": "ring_nonblocking",
         "broadcast": "rooted", "gather_to_root": "rooted", "reduce_to_root": "rooted", "scatter": "rooted"}
__all__ = ["Communicator", "Request", "Ledger", "ring_reduce_scatter", "ring_allgather",
           "ring_allreduce", "RingAllreduce", "gather_to_root", "reduce_to_root", "broadcast", "scatter",
           "recursive_doubling_allreduce", "rabenseifner_allreduce", "allreduce",
           "choose_allreduce_algorithm", "mpi_allreduce"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'minidist.comm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
