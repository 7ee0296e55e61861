"""A correct solution of the ring exercise (the grader's tests use it): one Sendrecv a step."""
import numpy as np


def ring_allreduce(comm, x):
    rank, size = comm.Get_rank(), comm.Get_size()
    chunks = np.array_split(np.arange(x.size), size)
    right, left = (rank + 1) % size, (rank - 1) % size
    incoming = np.empty(max((len(c) for c in chunks), default=0), x.dtype)
    for step in range(size - 1):  # reduce-scatter
        send, recv = chunks[(rank - step) % size], chunks[(rank - step - 1) % size]
        buf = incoming[: len(recv)]
        comm.Sendrecv(np.ascontiguousarray(x[send]), right, 0, buf, left, 0)
        x[recv] += buf
    for step in range(size - 1):  # all-gather
        send, recv = chunks[(rank + 1 - step) % size], chunks[(rank - step) % size]
        buf = incoming[: len(recv)]
        comm.Sendrecv(np.ascontiguousarray(x[send]), right, 1, buf, left, 1)
        x[recv] = buf
    return x
