"""minidist.comm: a Communicator that records every message in a ledger, and every
collective written from its point-to-point calls. NumPy and mpi4py only: this package
never imports autograd, nn or parallel.

    from minidist.comm import Communicator, ring_allreduce
    comm = Communicator()                  # MPI.COMM_WORLD
    with comm.phase("grad-allreduce"):
        ring_allreduce(comm, grads, op="mean")
    comm.ledger.totals("grad-allreduce")   # bytes/messages sent and received, seconds

Arrays: C-contiguous float32, float64 or int64 (anything else raises, saying what to do);
the ring collectives also take float16 (summed in float16, for DDP's fp16 hook).
Reductions: op="sum" | "mean" | "max" | "min"; "mean" needs a floating dtype (TypeError
for int64: use "sum" and divide).

Run under ``mpiexec -n N python -m mpi4py script.py`` so that an exception on one rank
aborts the whole job (or use ``with comm.fail_together():``).

Non-blocking: ``op = RingAllreduce(comm, x, tag=...).start()``, then ``op.advance()``
while computing and ``op.wait()`` at the end: the same ring as `ring_allreduce`, the
same bytes, posted step by step.
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
