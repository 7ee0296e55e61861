"""Shared helpers for the minidist.nn.functional tests: the float64 gradient check on
plain arrays, and torch conversions."""
from __future__ import annotations

import numpy as np

from minidist import Tensor
from minidist.autograd.gradcheck import gradcheck


def check_grads(fn, *arrays, seed=0, eps=1e-6, atol=1e-6, rtol=1e-5):
    """`gradcheck` of ``fn(*tensors)``, each array becoming a float64 Tensor that requires
    grad (central differences under a random output weighting)."""
    tensors = [Tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    assert gradcheck(fn, tensors, eps=eps, atol=atol, rtol=rtol, seed=seed)


def to_torch(torch, a, requires_grad=True):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def close(mine, theirs, atol=1e-10, rtol=1e-8):
    """Assert a minidist Tensor/array equals a torch tensor/array."""
    m = mine.data if isinstance(mine, Tensor) else np.asarray(mine)
    t = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    np.testing.assert_allclose(m, t, atol=atol, rtol=rtol)


def matches_torch(torch, out, ref, pairs, rng):
    """`out` equals torch's `ref`, and after back-propagating the same random gradient
    (drawn from `rng`) through both, each (minidist tensor, torch tensor) in `pairs` has
    the same ``.grad``."""
    close(out, ref)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    for mine, theirs in pairs:
        close(mine.grad, theirs.grad)
