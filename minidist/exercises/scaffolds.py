'''The files `start` writes: signatures, shapes and formulas, and NotImplementedError bodies.

They state what to compute (the same conventions as PyTorch and minidist.nn), never how
minidist computes it: the reference the grader uses is the library's own code.
'''

BATCHNORM = '''"""Batch normalisation in NumPy: forward with running statistics, and backward.

Fill in the two functions, then run:  minidist exercise check DIR batchnorm
"""
import numpy as np


def batchnorm_forward(x, gamma, beta, running_mean, running_var, *, training, momentum=0.1, eps=1e-5):
    r"""Normalise every channel of `x`, then scale by gamma and shift by beta.

    Shapes:
        x: (N, C) (fully connected) or (N, C, H, W) (convolution); channels on axis 1.
        gamma, beta, running_mean, running_var: (C,).
        out: the shape of x.

    Statistics are per channel, over every axis but the channel axis (N for (N, C);
    N, H and W for (N, C, H, W)); m is the number of values each channel has:

        mean = (1/m) sum x                var = (1/m) sum (x - mean)**2     (biased)
        xhat = (x - mean) / sqrt(var + eps)
        out  = gamma * xhat + beta

    training=True: use this batch's mean and (biased) var, and update the running
    statistics IN PLACE (running_mean[...] = ..., not running_mean = ...):

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)

    (the running variance takes the UNBIASED variance, as PyTorch does).
    training=False: normalise with running_mean and running_var instead, and leave them
    unchanged.

    Returns (out, cache): cache is whatever batchnorm_backward needs (your choice).
    """
    raise NotImplementedError


def batchnorm_backward(dout, cache):
    r"""Gradients of a training-mode batchnorm_forward.

    dout: dL/dout, the shape of x. Returns (dx, dgamma, dbeta) with
        dx: the shape of x, dgamma and dbeta: (C,).

        dbeta  = sum dout                  (over the same axes as the statistics)
        dgamma = sum dout * xhat
        dx     = dL/dx, remembering that mean and var are functions of x too.
    """
    raise NotImplementedError
'''

LAYERNORM = '''"""Layer normalisation in NumPy: forward and backward, over the last dimension.

Fill in the two functions, then run:  minidist exercise check DIR layernorm
"""
import numpy as np


def layernorm_forward(x, gamma, beta, *, eps=1e-5):
    r"""Normalise each row of `x` over its LAST dimension, then scale and shift.

    Shapes:
        x: (..., D), e.g. (N, D) or (N, T, D).
        gamma, beta: (D,).
        out: the shape of x.

    For every row (every index of the leading axes), over its D values:

        mean = (1/D) sum x                 var = (1/D) sum (x - mean)**2     (biased)
        xhat = (x - mean) / sqrt(var + eps)
        out  = gamma * xhat + beta

    No running statistics: training and evaluation compute the same thing.
    Returns (out, cache): cache is whatever layernorm_backward needs (your choice).
    """
    raise NotImplementedError


def layernorm_backward(dout, cache):
    r"""Gradients of layernorm_forward.

    dout: dL/dout, the shape of x. Returns (dx, dgamma, dbeta) with
        dx: the shape of x, dgamma and dbeta: (D,) (summed over every leading axis).

        dbeta  = sum dout                  dgamma = sum dout * xhat
        dx     = dL/dx, remembering that each row's mean and var are functions of x.
    """
    raise NotImplementedError
'''

RING = '''"""Ring all-reduce with mpi4py point-to-point calls.

Fill in ring_allreduce, then run:  minidist exercise check DIR ring
(the grader runs it under mpiexec -n 1, 2, 3, 4 and 5).
"""
import numpy as np


def ring_allreduce(comm, x):
    r"""Sum the 1-D NumPy array `x` over all ranks, IN PLACE, by ring.

    comm: an mpi4py communicator (comm.Get_rank(), comm.Get_size(), comm.Send,
        comm.Recv, comm.Sendrecv, comm.Isend, comm.Irecv). Collectives such as
        comm.Allreduce, comm.Reduce or comm.Allgather are not allowed.
    x: 1-D array (float64, float32 or int64), the same length and dtype on every rank;
        its length need not be divisible by the number of ranks N (it may even be
        smaller than N).

    Afterwards every rank's x holds sum over ranks of x, the same bytes on every rank.

    The ring: rank r sends to (r + 1) % N and receives from (r - 1) % N. Cut x into N
    chunks (np.array_split's layout is one choice). Then
      1. reduce-scatter, N - 1 steps: each step every rank sends one chunk to its right
         neighbour and adds the chunk arriving from its left; afterwards each rank holds
         one chunk fully summed;
      2. all-gather, N - 1 steps: the summed chunks travel once around the ring and
         overwrite the partial ones.
    Each rank sends 2 (N - 1) / N of x's bytes in all (give or take one element per
    step when the chunks are uneven); the grader counts them.
    Returns nothing (or x).
    """
    raise NotImplementedError
'''

SCAFFOLDS = {"batchnorm": BATCHNORM, "layernorm": LAYERNORM, "ring": RING}
