"""Wrong: lets MPI do the work with comm.Allreduce (the grader refuses it)."""
import numpy as np


def ring_allreduce(comm, x):
    total = np.empty_like(x)
    comm.Allreduce(x, total)
    x[...] = total
