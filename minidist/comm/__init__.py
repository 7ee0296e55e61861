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
from .allreduce import (allreduce, choose_allreduce_algorithm, mpi_allreduce,
                        rabenseifner_allreduce, recursive_doubling_allreduce)
from .communicator import Communicator, Request
from .ledger import Ledger
from .ring import ring_allgather, ring_allreduce, ring_reduce_scatter
from .ring_nonblocking import RingAllreduce
from .rooted import broadcast, gather_to_root, reduce_to_root, scatter

__all__ = ["Communicator", "Request", "Ledger", "ring_reduce_scatter", "ring_allgather",
           "ring_allreduce", "RingAllreduce", "gather_to_root", "reduce_to_root", "broadcast", "scatter",
           "recursive_doubling_allreduce", "rabenseifner_allreduce", "allreduce",
           "choose_allreduce_algorithm", "mpi_allreduce"]
