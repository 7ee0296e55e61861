"""The NumPy floor of an MLP training step: the step of bench_engine's `mlp` and `tiny`
models written as bare NumPy calls, with no autograd, no checks and every buffer that
can be kept, kept. What any NumPy engine pays at least: `bench_engine.py --compare numpy`
times minidist against it, `--compare numpy-torch` it against PyTorch.

The arithmetic is minidist's (x W^T + b, ReLU against zeros, cross-entropy shifted by the
row max, ReLU's gradient masked where the output is <= 0, plain SGD p -= lr g), so the
first loss equals minidist's bit for bit.
"""
from __future__ import annotations

import numpy as np


def numpy_stepper(model, x, y, lr=0.01):
    """A step function over copies of `model`'s Linear weights (a Linear-ReLU-...-Linear
    stack, as bench_engine builds it); returns the loss as a float, as the other steppers."""
    linears = [m for m in model.children() if type(m).__name__ == "Linear"]
    weights = [m.weight.data.copy() for m in linears]
    biases = [m.bias.data.copy() for m in linears]
    rows = np.arange(len(y))
    zeros = {w.shape[0]: np.zeros((len(y), w.shape[0]), w.dtype) for w in weights}
    keep = {w.shape[0]: np.empty((len(y), w.shape[0]), bool) for w in weights}
    update = {id(p): np.empty_like(p) for p in weights + biases}

    def step():
        inputs, h = [], x
        for i, (w, b) in enumerate(zip(weights, biases)):
            inputs.append(h)
            h = h @ w.T
            h += b
            if i < len(weights) - 1:
                h = np.maximum(h, zeros[w.shape[0]])
        shifted = h - h.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sumexp = exp.sum(axis=1, keepdims=True)
        loss = (np.log(sumexp[:, 0]) - shifted[rows, y]).sum() / len(y)
        g = exp / sumexp
        g[rows, y] -= 1
        g *= np.asarray(1 / len(y), dtype=g.dtype)
        grads = []
        for i in reversed(range(len(weights))):
            a = inputs[i]
            grads += [(weights[i], g.T @ a), (biases[i], g.sum(axis=0))]
            if i:  # the input needs no gradient
                mask = np.less_equal(a, 0, out=keep[a.shape[1]])
                g = (g @ weights[i]) * np.logical_not(mask, out=mask)
        for p, grad in grads:  # after the whole backward, as optimizer.step() does
            p -= np.multiply(grad, lr, out=update[id(p)])
        return float(loss)

    return step
