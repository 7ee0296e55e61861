"""Every autograd op: float64 finite-difference checks, forward and gradients against
PyTorch (float64), broadcasting from Hypothesis, dtype preservation, stability, errors."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from minidist import Tensor
from minidist.autograd import ops
from minidist.autograd.gradcheck import gradcheck
from strategies import broadcastable_array_pairs

# One case: our function and torch's on the same inputs; `specs` says how to draw each
# input: (shape, kind) with kind "n" normal, "p" positive, "z" away from zero (kinks and
# denominators), "c" a constant (no gradient).
Case = namedtuple("Case", "ours theirs specs")
MASK = np.array([[True, False, True, True], [False, False, True, False], [True, True, False, False]])
REPEATED = np.array([0, 2, 0, 0])
ROWS, COLS = np.array([[0, 1], [1, 1]]), np.array([2, 0])


def _t(torch, index):
    """The same index for torch: arrays become tensors (tuples element by element)."""
    if isinstance(index, tuple):
        return tuple(_t(torch, i) for i in index)
    return torch.as_tensor(index) if isinstance(index, np.ndarray) else index


def both(fn, *specs):
    """A case whose expression works unchanged on our Tensors and torch's."""
    return Case(fn, lambda T, *xs: fn(*xs), list(specs))


def n(*shape):
    return shape, "n"


def p(*shape):
    return shape, "p"


def z(*shape):
    return shape, "z"


MATMUL = lambda a, b: a @ b  # noqa: E731
CASES = {
    # arithmetic, with broadcasting
    "add-broadcast": both(lambda a, b: a + b, n(3, 4), n(4)),
    "add-3d": both(lambda a, b: a + b, n(2, 1, 3), n(4, 1)),
    "sub-0d": both(lambda a, b: a - b, n(), n(3)),
    "mul-outer": both(lambda a, b: a * b, n(3, 1), n(1, 3)),
    "mul-const": both(lambda a, b: a * b, n(2, 3), ((2, 3), "c")),
    "div-broadcast": both(lambda a, b: a / b, n(2, 3), z(3)),
    "neg": both(lambda a: -a, n(2, 3)),
    "scalar-mul-radd": both(lambda a: 2.5 * a + 1, n(3)),
    "scalar-rsub-rdiv": both(lambda a: 1.5 - 2 / a, z(3)),
    "numpy-scalar-div": Case(lambda a: a / np.float64(3.0), lambda T, a: a / 3.0, [n(3)]),
    # matmul: 2-D, vectors, batched and broadcast batches
    "matmul-2d": both(MATMUL, n(3, 4), n(4, 5)),
    "matmul-vec-vec": both(MATMUL, n(4), n(4)),
    "matmul-vec-mat": both(MATMUL, n(4), n(4, 5)),
    "matmul-mat-vec": both(MATMUL, n(3, 4), n(4)),
    "matmul-batched": both(MATMUL, n(2, 3, 4), n(2, 4, 5)),
    "matmul-batch-mat": both(MATMUL, n(2, 3, 4), n(4, 5)),
    "matmul-batch-bcast": both(MATMUL, n(1, 3, 4), n(2, 4, 2)),
    "matmul-vec-batch": both(MATMUL, n(4), n(2, 4, 5)),
    "matmul-batch-vec": both(MATMUL, n(2, 3, 4), n(4)),
    # reductions
    "sum-all": both(lambda a: a.sum(), n(3, 4)),
    "sum-axis0": Case(lambda a: a.sum(axis=0), lambda T, a: a.sum(0), [n(3, 4)]),
    "sum-neg-keepdims": Case(lambda a: a.sum(axis=-1, keepdims=True),
                             lambda T, a: a.sum(-1, keepdim=True), [n(2, 3, 4)]),
    "sum-tuple": Case(lambda a: a.sum(axis=(0, 2)), lambda T, a: a.sum((0, 2)), [n(2, 3, 4)]),
    "mean-all": both(lambda a: a.mean(), n(3, 4)),
    "mean-neg": Case(lambda a: a.mean(axis=-2), lambda T, a: a.mean(-2), [n(2, 3, 4)]),
    "mean-tuple-keepdims": Case(lambda a: a.mean(axis=(0, -1), keepdims=True),
                                lambda T, a: a.mean((0, -1), keepdim=True), [n(2, 3, 4)]),
    "max-all": Case(lambda a: a.max(), lambda T, a: T.amax(a, (0, 1)), [n(3, 4)]),
    "max-axis1": Case(lambda a: a.max(axis=1), lambda T, a: T.amax(a, 1), [n(3, 4)]),
    "max-neg-keepdims": Case(lambda a: a.max(axis=-1, keepdims=True),
                             lambda T, a: T.amax(a, -1, keepdim=True), [n(2, 3, 4)]),
    "max-tuple": Case(lambda a: ops.reduce_max(a, axis=(0, -1)), lambda T, a: T.amax(a, (0, -1)), [n(2, 3, 4)]),
    # shape and indexing
    "reshape": both(lambda a: a.reshape(4, -1), n(2, 3, 2)),
    "transpose-T": Case(lambda a: a.T, lambda T, a: a.permute(1, 0), [n(3, 4)]),
    "transpose-axes": Case(lambda a: a.transpose(1, 2, 0), lambda T, a: a.permute(1, 2, 0), [n(2, 3, 4)]),
    "getitem-slices": Case(lambda a: a[1:, ::-1], lambda T, a: a[1:].flip(1), [n(3, 4)]),
    "getitem-int-none-ellipsis": both(lambda a: a[0, None, ..., 1], n(2, 3, 4)),
    "getitem-repeated": Case(lambda a: a[REPEATED], lambda T, a: a[_t(T, REPEATED)], [n(3, 2)]),
    "getitem-int-arrays": Case(lambda a: a[ROWS, COLS], lambda T, a: a[_t(T, (ROWS, COLS))], [n(3, 4)]),
    "getitem-mixed": Case(lambda a: a[np.array([1, 1]), 1:3], lambda T, a: a[T.tensor([1, 1]), 1:3],
                          [n(3, 4)]),
    "getitem-bool": Case(lambda a: a[MASK], lambda T, a: a[_t(T, MASK)], [n(3, 4)]),
    "getitem-tensor-list": Case(lambda a: a[Tensor(np.array([2, 2]))] + a[[1]],
                                lambda T, a: a[T.tensor([2, 2])] + a[[1]], [n(3)]),
    "concatenate-0": Case(lambda *xs: ops.concatenate(xs), lambda T, *xs: T.cat(xs),
                          [n(2, 3), n(1, 3), n(3, 3)]),
    "concatenate-neg": Case(lambda *xs: ops.concatenate(list(xs), axis=-1), lambda T, *xs: T.cat(xs, -1),
                            [n(2, 2), n(2, 3)]),
    "stack-0": Case(lambda *xs: ops.stack(xs), lambda T, *xs: T.stack(xs), [n(2, 3), n(2, 3)]),
    "stack-neg": Case(lambda *xs: ops.stack(xs, axis=-1), lambda T, *xs: T.stack(xs, -1), [n(2, 3)] * 3),
    # powers, exp, log
    "pow-2": both(lambda a: a ** 2, n(3, 4)),
    "pow-3": both(lambda a: a ** 3.0, n(3, 4)),
    "pow-half": both(lambda a: a ** 0.5, p(3, 4)),
    "pow-neg-frac": both(lambda a: a ** -1.5, p(3, 4)),
    "pow-0": both(lambda a: a ** 0, n(3)),
    "pow-numpy-scalar": Case(lambda a: a ** np.float64(2.0), lambda T, a: a ** 2.0, [n(3)]),
    "pow-tensor": both(lambda a, b: a ** b, p(2, 3), n(3)),
    "pow-scalar-base": Case(lambda b: ops.power(2.0, b), lambda T, b: T.pow(2.0, b), [n(3)]),
    "exp": Case(ops.exp, lambda T, a: a.exp(), [n(3, 4)]),
    "log": Case(ops.log, lambda T, a: a.log(), [p(3, 4)]),
    "sqrt": both(lambda a: a.sqrt(), p(3, 4)),
    # activations
    "relu": Case(ops.relu, lambda T, a: T.relu(a), [z(3, 4)]),
    "sigmoid": Case(ops.sigmoid, lambda T, a: T.sigmoid(a), [n(3, 4)]),
    "sigmoid-wide": Case(lambda a: ops.sigmoid(a * 15), lambda T, a: T.sigmoid(a * 15), [n(3, 4)]),
    "tanh": Case(ops.tanh, lambda T, a: T.tanh(a), [n(3, 4)]),
    "log_softmax-last": Case(ops.log_softmax, lambda T, a: T.log_softmax(a, -1), [n(3, 4)]),
    "log_softmax-axis0": Case(lambda a: ops.log_softmax(a, axis=0), lambda T, a: T.log_softmax(a, 0),
                              [n(3, 2, 4)]),
    "log_softmax-axis1": Case(lambda a: ops.log_softmax(a, axis=1), lambda T, a: T.log_softmax(a, 1),
                              [n(3, 2, 4)]),
}


def draw_inputs(case_id, dtype=np.float64):
    rng = np.random.default_rng(sorted(CASES).index(case_id))
    arrays = []
    for shape, kind in CASES[case_id].specs:
        x = rng.standard_normal(shape)
        if kind == "p":
            x = rng.uniform(0.5, 2.0, shape)
        elif kind == "z":
            x = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)
        arrays.append((np.asarray(x, dtype=dtype), kind != "c"))
    return arrays


def as_tensors(arrays):
    return [Tensor(x.copy(), requires_grad=g) for x, g in arrays]


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_gradcheck(case_id):
    assert gradcheck(CASES[case_id].ours, as_tensors(draw_inputs(case_id)))


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_matches_torch(case_id, torch):
    arrays = draw_inputs(case_id)
    ours = as_tensors(arrays)
    theirs = [torch.tensor(x, requires_grad=g) for x, g in arrays]
    out, ref = CASES[case_id].ours(*ours), CASES[case_id].theirs(torch, *theirs)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    weights = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(weights)
    ref.backward(torch.tensor(weights))
    for (_, needs), x, tx in zip(arrays, ours, theirs):
        if needs:
            np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
        else:
            assert x.grad is None


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_float32_stays_float32(case_id):
    tensors = as_tensors(draw_inputs(case_id, np.float32))
    out = CASES[case_id].ours(*tensors)
    assert out.dtype == np.float32
    out.backward(np.ones(out.shape, np.float32))
    assert all(t.grad.dtype == np.float32 for t in tensors if t.requires_grad)


BINARY = {"add": (ops.add, lambda a, b: a + b), "sub": (ops.sub, lambda a, b: a - b),
          "mul": (ops.mul, lambda a, b: a * b), "div": (ops.div, lambda a, b: a / b)}


@pytest.mark.parametrize("name", sorted(BINARY))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=broadcastable_array_pairs(nonzero_second=True))
def test_broadcast_binary_gradients_match_torch(name, data, torch):
    a, b = data
    ours_fn, torch_fn = BINARY[name]
    x, y = Tensor(a.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True)
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out, ref = ours_fn(x, y), torch_fn(tx, ty)
    weights = np.linspace(-1.0, 2.0, out.size).reshape(out.shape)
    out.backward(weights)
    ref.backward(torch.tensor(weights))
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert x.grad.shape == a.shape and y.grad.shape == b.shape
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y.grad, ty.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---- max with ties: the gradient is shared evenly, as torch.amax ------------------------------
@pytest.mark.parametrize("axis, keepdims", [(None, False), (1, False), (-1, True), (0, False)])
def test_max_splits_gradient_among_ties(axis, keepdims, torch):
    data = np.array([[1.0, 3.0, 3.0], [3.0, 2.0, 3.0]])
    x = Tensor(data.copy(), requires_grad=True)
    out = ops.reduce_max(x, axis=axis, keepdims=keepdims)
    weights = np.arange(1.0, out.size + 1).reshape(out.shape)
    out.backward(weights)
    tx = torch.tensor(data, requires_grad=True)
    dims = (0, 1) if axis is None else axis
    torch.amax(tx, dims, keepdim=keepdims).backward(torch.tensor(weights))
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-15)
    if axis is None:  # four tied maxima share the one gradient
        np.testing.assert_allclose(x.grad, (data == 3.0) * weights / 4)


def test_getitem_repeated_index_accumulates():
    x = Tensor(np.arange(4.0), requires_grad=True)
    (x[[0, 0, 3, 0]] * Tensor(np.array([1.0, 2.0, 3.0, 4.0]))).sum().backward()
    np.testing.assert_array_equal(x.grad, [7.0, 0.0, 0.0, 3.0])


def test_getitem_basic_index_is_a_view_and_advanced_a_copy():
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert np.shares_memory(x[:, 1:].data, x.data)
    assert not np.shares_memory(x[[0, 1]].data, x.data)


# ---- dtype and numerical stability ------------------------------------------------------------
@pytest.mark.parametrize("fn", [lambda x: x * 2.0, lambda x: 3 - x, lambda x: x / np.float64(2.0),
                                lambda x: x + np.ones(3), lambda x: x ** np.float64(2.0),
                                lambda x: ops.power(np.float64(2.0), x), lambda x: x.max() * 0.5])
def test_python_and_numpy_scalars_keep_float32(fn):
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    out = fn(x)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_for_large_inputs(dtype):
    x = np.array([-1000.0, -40.0, -5.0, 0.0, 5.0, 40.0, 1000.0], dtype=dtype)
    t = Tensor(x, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # (underflow to 0 is fine)
        out = ops.sigmoid(t)
        out.sum().backward()
    exact = np.exp(-np.logaddexp(0.0, -x.astype(np.float64)))
    np.testing.assert_allclose(out.data, exact, rtol=1e-6 if dtype == np.float32 else 1e-14)
    assert np.all(np.isfinite(t.grad)) and t.grad[0] == 0.0 and t.grad[3] == 0.25


def test_log_softmax_is_stable_for_large_inputs(torch):
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]])
    t = Tensor(x, requires_grad=True)
    with np.errstate(over="raise", invalid="raise"):
        out = ops.log_softmax(t)
        out.sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    ref = torch.log_softmax(tx, -1)
    ref.sum().backward()
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(t.grad, tx.grad.numpy(), atol=1e-14)


def test_pow_gradients_at_zero_base_are_zero_as_torch(torch):
    base, exponent = np.array([0.0, 0.0, 2.0]), np.array([2.0, 0.0, 3.0])
    a, b = Tensor(base, requires_grad=True), Tensor(exponent, requires_grad=True)
    (a ** b).sum().backward()
    ta, tb = torch.tensor(base, requires_grad=True), torch.tensor(exponent, requires_grad=True)
    (ta ** tb).sum().backward()
    np.testing.assert_array_equal(a.grad, ta.grad.numpy())
    np.testing.assert_array_equal(b.grad, tb.grad.numpy())
    c, tc = Tensor(base.copy(), requires_grad=True), torch.tensor(base, requires_grad=True)
    (c ** 0).sum().backward()  # 0 * 0 ** -1 would be NaN; PyTorch defines it as 0
    (tc ** 0).sum().backward()
    np.testing.assert_array_equal(c.grad, tc.grad.numpy())


def test_helpers_accept_arrays_and_tensor_methods_call_them():
    x = np.array([[0.5, 2.0], [1.0, 4.0]])
    for name in ["exp", "log", "sqrt", "relu", "sigmoid", "tanh"]:
        via_helper = getattr(ops, name)(x)
        via_method = getattr(Tensor(x), name)()
        assert isinstance(via_helper, Tensor)
        np.testing.assert_array_equal(via_helper.data, via_method.data)
    np.testing.assert_array_equal(ops.reduce_max(x, axis=0).data, x.max(axis=0))
    np.testing.assert_array_equal(ops.concatenate([x, Tensor(x)]).data, np.concatenate([x, x]))


# ---- errors say what was wrong ------------------------------------------------------------------
def test_error_messages():
    x = Tensor(np.ones((2, 3)))
    with pytest.raises(IndexError, match="integers or booleans.*float64"):
        x[np.array([0.5])]
    with pytest.raises(ValueError, match="at least one tensor"):
        ops.concatenate([])
    with pytest.raises(TypeError, match="list or tuple of tensors.*wrap it in a list"):
        ops.stack(x)
    with pytest.raises(ValueError, match=r"axis 2 is out of range for a 2-D input of shape \(2, 3\)"):
        ops.log_softmax(x, axis=2)
    with pytest.raises(ValueError, match=r"empty tensor \(shape \(0, 3\)\)"):
        ops.reduce_max(Tensor(np.ones((0, 3))))
