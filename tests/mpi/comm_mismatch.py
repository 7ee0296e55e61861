"""Worker for tests/test_faults_mismatch.py: collectives called inconsistently across ranks,
under a plain ``mpiexec -n N python comm_mismatch.py CASE`` (the test sets
MINIDIST_DEBUG=1 and MINIDIST_TIMEOUT=2 where the case needs them).

The last rank makes the odd call. Every rank prints "returned" if its call returned: the
test asserts it never does for a mismatch (no wrong result), that the job ends non-zero
quickly, and that stderr names the ranks. CASE "agree" is the control: all ranks agree.
"""
import sys

import numpy as np

from minidist import Tensor
from minidist.comm import (Communicator, allreduce, broadcast, gather_to_root, reduce_to_root,
                           ring_allreduce)
from minidist.nn import BatchNorm1d, LayerNorm, Linear, Sequential
from minidist.nn import functional as F
from minidist.optim import SGD
from minidist.parallel import MLP, wrap

case = sys.argv[1]
comm = Communicator()
odd = comm.rank == comm.size - 1


def two_models_stepped_in_another_order(strategy):
    models = [wrap(MLP(4, 6, 3, rng=0, dtype=np.float64), strategy, comm) for _ in range(2)]
    optimizers = [SGD(m.parameters(), lr=0.1) for m in models]
    rng = np.random.default_rng(comm.rank)
    for m in models:
        loss = F.cross_entropy(m(Tensor(rng.standard_normal((5, 4)))), rng.integers(0, 3, 5))
        m.zero_grad()
        loss.backward()
    order = [1, 0] if odd else [0, 1]
    for i in order:
        models[i].step(optimizers[i])


def norm_layers_differ():
    norm = LayerNorm(4) if odd else BatchNorm1d(4)
    wrap(Sequential(Linear(4, 4), norm), "ddp", comm)


x = np.arange(12, dtype=np.float64)
if case == "agree":
    ring_allreduce(comm, x)
elif case == "count":
    ring_allreduce(comm, np.ones(10 if odd else 12))
elif case == "dtype":  # the same bytes: 12 int64 against 12 float64
    ring_allreduce(comm, np.arange(12, dtype=np.int64) if odd else x)
elif case == "dtype-bytes":  # the same bytes: 24 float32 against 12 float64
    ring_allreduce(comm, np.ones(24, np.float32) if odd else x)
elif case == "op":
    ring_allreduce(comm, x, op="max" if odd else "sum")
elif case == "root-gather":
    gather_to_root(comm, x, root=1 if odd else 0)
elif case == "root-reduce":
    reduce_to_root(comm, x, root=1 if odd else 0)
elif case == "root-broadcast":
    broadcast(comm, x, root=1 if odd else 0)
elif case == "algorithm":
    allreduce(comm, x, algorithm="recursive_doubling" if odd else "ring")
elif case == "skip":  # the odd rank skips the all-reduce and goes on to the barrier
    if not odd:
        ring_allreduce(comm, x)
    comm.barrier()
elif case == "skip-last":  # the odd rank skips the last call and leaves
    if not odd:
        ring_allreduce(comm, x)
elif case == "models-ddp":
    two_models_stepped_in_another_order("ddp")
elif case == "models-dp":
    two_models_stepped_in_another_order("dp")
elif case == "norms":
    norm_layers_differ()
else:
    raise SystemExit(f"unknown case {case!r}")
print(f"rank {comm.rank}: returned", flush=True)
