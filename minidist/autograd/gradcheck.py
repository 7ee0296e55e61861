"""Finite-difference gradient checks, in float64.

``gradcheck(fn, inputs)`` compares the gradient that backward computes with central
differences, element by element, for every input that requires grad; a failure names the
input, the element, the shape and both values. Inputs are perturbed in place and restored
exactly, so `fn` may reach them through a closure (a module's parameters) as well as
through its arguments. Examples: docs/autograd.md.
"""
from __future__ import annotations

import numpy as np

from .function import no_grad
from .tensor import Tensor


def numeric_grad(f, x, eps=1e-6):
    r"""Central-difference gradient of a scalar function with respect to the array `x`.

    .. math::
        \frac{\partial f}{\partial x_i} \approx
        \frac{f(x + \epsilon e_i) - f(x - \epsilon e_i)}{2\epsilon}

    Args:
        f: called as ``f(x)``; returns a number (or a one-element array/Tensor). It may
            also ignore its argument and read `x` through a closure.
        x: a float64 np.ndarray or Tensor (its ``.data`` is used). Perturbed in place,
            one element at a time, and restored exactly.
        eps: the step. The truncation error is O(eps**2), the round-off O(1e-16 / eps).

    Returns:
        np.ndarray of x's shape, float64.
    """
    data = x.data if isinstance(x, Tensor) else x
    if not isinstance(data, np.ndarray) or data.dtype != np.float64:
        raise TypeError(f"numeric_grad needs a float64 array (got "
                        f"{getattr(data, 'dtype', type(data).__name__)}); finite differences "
                        "in lower precision are swamped by round-off")
    if not data.flags.writeable:
        raise ValueError("numeric_grad perturbs x in place, but its array is read-only; "
                         "pass a writable copy")
    grad = np.empty(data.shape, dtype=np.float64)
    for i in np.ndindex(data.shape):  # one forward pair per element: inherent to the method
        original = data[i]
        data[i] = original + eps
        plus = _scalar(f(x))
        data[i] = original - eps
        minus = _scalar(f(x))
        data[i] = original
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def _scalar(value) -> float:
    value = value.data if isinstance(value, Tensor) else value
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"the function under a numeric gradient must return one number "
                         f"(got shape {arr.shape})")
    return float(arr.reshape(()))


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0):
    r"""Check backward against central differences for every input that requires grad.

    The scalar checked is ``L = (fn(*inputs) * R).sum()`` with ``R`` a fixed
    standard-normal float64 array from ``np.random.default_rng(seed)`` (so every output
    element matters, each with its own weight). For every element ``i`` of every input
    ``x`` with ``requires_grad``, the analytic ``dL/dx_i`` from ``backward`` must satisfy

    .. math:: |g_\text{analytic} - g_\text{numeric}| \le \text{atol} + \text{rtol}\,|g_\text{numeric}|

    where ``g_numeric = (L(x_i + eps) - L(x_i - eps)) / (2 eps)``.

    Args:
        fn: called as ``fn(*inputs)``; returns a float64 Tensor of any shape. It must be
            deterministic (seed any dropout inside it from a fixed generator).
        inputs: sequence of Tensors (other values are passed through unchecked). Every
            floating Tensor must be float64; those with ``requires_grad`` are checked.
        eps, atol, rtol: step and tolerances, as above.
        seed: seeds ``R``.

    Returns:
        True when every element matches.

    Raises:
        TypeError: a floating input or the output is not float64.
        ValueError: no input requires grad, or `fn` does not return a Tensor.
        AssertionError: a mismatch, naming the input index, the element's multi-index,
            the input's shape, the analytic and numeric values, and how many elements of
            that input mismatch.

    The ``.grad`` of the checked inputs is restored afterwards; other leaves that `fn`
    uses (parameters not listed in `inputs`) get the gradient accumulated into ``.grad``.
    """
    inputs = list(inputs)
    checked = _validate_inputs(inputs)
    analytic, weights = _analytic_grads(fn, inputs, checked, seed)

    def loss(_):
        with no_grad():
            return float((np.asarray(fn(*inputs).data) * weights).sum())

    for k, a in zip(checked, analytic):
        _compare(k, a, numeric_grad(loss, inputs[k], eps), eps, atol, rtol)
    return True


def _analytic_grads(fn, inputs, checked, seed):
    """``(backward's gradient of each checked input, the output weights R)``; the inputs'
    own ``.grad`` is restored afterwards."""
    saved_grads = [inputs[k].grad for k in checked]
    try:
        for k in checked:
            inputs[k].grad = None
        out = fn(*inputs)
        _validate_output(out)
        weights = np.random.default_rng(seed).standard_normal(out.shape)
        if out.requires_grad:
            (out * Tensor._from_array(weights)).sum().backward()
        analytic = [inputs[k].grad if inputs[k].grad is not None
                    else np.zeros(inputs[k].shape) for k in checked]
    finally:
        for k, g in zip(checked, saved_grads):
            inputs[k].grad = g
    return analytic, weights


def _compare(k, a, numeric, eps, atol, rtol) -> None:
    """Raise AssertionError naming input `k`'s worst element when `a` and `numeric` differ."""
    bad = np.abs(a - numeric) > atol + rtol * np.abs(numeric)
    bad |= np.isnan(a) != np.isnan(numeric)
    if bad.any():
        excess = np.where(bad, np.abs(a - numeric) - rtol * np.abs(numeric), -np.inf)
        excess = np.where(np.isnan(excess), np.inf, excess)
        worst = np.unravel_index(np.argmax(excess), a.shape) if a.ndim else ()
        where = tuple(int(j) for j in worst)
        raise AssertionError(
            f"gradcheck: gradient of input {k} (shape {tuple(a.shape)}) is wrong at index "
            f"{where}: analytic {float(a[worst])!r}, numeric {float(numeric[worst])!r} "
            f"({int(bad.sum())} of {a.size} elements outside atol={atol}, rtol={rtol}; "
            f"eps={eps})")


def _validate_inputs(inputs):
    checked = []
    for k, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            continue
        if x.dtype.kind == "f" and x.dtype != np.float64:
            raise TypeError(f"gradcheck input {k} is {x.dtype} (shape {x.shape}); finite "
                            "differences need float64: build it with float64 data, or cast a "
                            "module with .to(np.float64)")
        if x.requires_grad:
            if not x.is_leaf:
                raise ValueError(f"gradcheck input {k} is not a leaf tensor (it was computed "
                                 "from others); pass the leaves, or .detach() it and set "
                                 "requires_grad=True")
            checked.append(k)
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check; "
                         "create the inputs with requires_grad=True")
    return checked


def _validate_output(out):
    if not isinstance(out, Tensor):
        raise ValueError(f"gradcheck: fn must return a Tensor (got {type(out).__name__})")
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned a {out.dtype} tensor; everything it computes "
                        "must be float64 (a float32 parameter or constant inside fn "
                        "lowers the precision)")
