"""Shared helpers for the minidist.nn.functional tests: a float64 central-difference
gradient check and torch conversions."""
from __future__ import annotations

import numpy as np

from minidist import Tensor


def numeric_grads(fn, arrays, weights, eps=1e-6):
    """Central differences of ``sum(fn(*arrays) * weights)`` w.r.t. every array (float64)."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)  # views: perturb in place
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            up = np.sum(fn(*arrays) * weights)
            flat[k] = old - eps
            down = np.sum(fn(*arrays) * weights)
            flat[k] = old
            gflat[k] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def check_grads(fn, *arrays, seed=0, eps=1e-6, atol=1e-6, rtol=1e-5):
    """Compare the analytic gradients of ``fn(*tensors)`` (each array becomes a float64
    Tensor requiring grad) with central differences, under a random output weighting."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(weights)
    numeric = numeric_grads(lambda *xs: fn(*[Tensor(x) for x in xs]).data, arrays, weights, eps)
    for i, (t, expected) in enumerate(zip(tensors, numeric)):
        assert t.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(t.grad, expected, atol=atol, rtol=rtol, err_msg=f"gradient of input {i}")


def to_torch(torch, a, requires_grad=True):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def close(mine, theirs, atol=1e-10, rtol=1e-8):
    """Assert a minidist Tensor/array equals a torch tensor/array."""
    m = mine.data if isinstance(mine, Tensor) else np.asarray(mine)
    t = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    np.testing.assert_allclose(m, t, atol=atol, rtol=rtol)
