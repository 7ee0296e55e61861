"""Wrong: the all-gather stops one step early, so the last rank keeps one partial chunk."""
import numpy as np


def ring_allreduce(comm, x):
    rank, size = comm.Get_rank(), comm.Get_size()
    chunks = np.array_split(np.arange(x.size), size)
    right, left = (rank + 1) % size, (rank - 1) % size
    for step in range(size - 1):
        send, recv = chunks[(rank - step) % size], chunks[(rank - step - 1) % size]
        buf = np.empty(len(recv), x.dtype)
        comm.Sendrecv(np.ascontiguousarray(x[send]), right, 0, buf, left, 0)
        x[recv] += buf
    for step in range(size - 1):
        send, recv = chunks[(rank + 1 - step) % size], chunks[(rank - step) % size]
        buf = np.empty(len(recv), x.dtype)
        comm.Sendrecv(np.ascontiguousarray(x[send]), right, 1, buf, left, 1)
        if not (rank == size - 1 and step == size - 2):
            x[recv] = buf
