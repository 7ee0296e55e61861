"""A correct solution of the layernorm exercise (the grader's tests use it)."""
import numpy as np


def layernorm_forward(x, gamma, beta, *, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    return gamma * xhat + beta, (xhat, invstd, gamma)


def layernorm_backward(dout, cache):
    xhat, invstd, gamma = cache
    lead = tuple(range(dout.ndim - 1))
    dxhat = dout * gamma
    dx = invstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                   - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, (dout * xhat).sum(axis=lead), dout.sum(axis=lead)
