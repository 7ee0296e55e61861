"""The backward engine (accumulation, no_grad, freeing, hooks, order, depth, dtypes,
errors) and the finite-difference checker itself."""
from __future__ import annotations

import numpy as np
import pytest

from minidist import Function, Tensor, no_grad
from minidist.autograd import ops
from minidist.autograd.function import is_grad_enabled
from minidist.autograd.gradcheck import gradcheck, numeric_grad


def leaf(*shape, seed=0, dtype=np.float64):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype), requires_grad=True)


# ---- accumulation ---------------------------------------------------------------------------
def test_tensor_used_twice_gets_both_contributions():
    x = leaf(3)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)
    y = leaf(3)
    (y + y).sum().backward()  # one node, the same tensor in both inputs
    np.testing.assert_allclose(y.grad, np.full(3, 2.0))


def test_grad_accumulates_across_backward_calls():
    x = leaf(2, 3)
    for _ in range(2):
        (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, np.full((2, 3), 6.0))
    x.zero_grad()
    assert x.grad is None


def test_backward_on_a_leaf_and_retain_grad():
    x = leaf(3)
    x.backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(x.grad, [1.0, 2.0, 3.0])
    h = x * 2.0
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)


def test_no_grad_records_nothing():
    x = leaf(3)
    with no_grad():
        assert not is_grad_enabled()
        y = (x * 2.0).exp().sum()
    assert is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()

    @no_grad()
    def evaluate(t):
        return ops.relu(t) * 2.0

    assert not evaluate(x).requires_grad and is_grad_enabled()


def test_branch_without_gradient_still_completes_its_inputs():
    """A Function may return None for an input that requires grad (no derivative there);
    leaves reached also through that node must still get their gradient and hooks."""

    class NoGradient(Function):
        @staticmethod
        def forward(ctx, a):
            return a.copy()

        @staticmethod
        def backward(ctx, grad):
            return None

    x = leaf(3)
    fired = []
    x.register_post_accumulate_grad_hook(lambda t: fired.append(t.grad.copy()))
    h = x * 2.0
    (NoGradient.apply(h) + h).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 2.0))
    assert len(fired) == 1


def test_a_fresh_gradient_is_taken_without_a_copy_and_a_shared_one_is_copied():
    """.grad takes the array a backward returned when nothing else holds it (no copy, as
    PyTorch); an array that another input, a Function, a hook or the caller still holds is
    copied, so an in-place update of one .grad (DDP writes the average into it) changes
    nothing else."""
    handed = {}

    class Scale(Function):  # backward returns a new array, or one it keeps (`keep=True`)
        @staticmethod
        def forward(ctx, a, keep):
            ctx.keep = keep
            return a * 2.0

        @staticmethod
        def backward(ctx, grad):
            g = grad * 2.0
            handed["id"] = id(g)
            if ctx.keep:
                ctx.kept = g
            return g, None

    x = leaf(3)
    Scale.apply(x, False).sum().backward()
    assert id(x.grad) == handed["id"]  # taken as is
    y = leaf(3)
    kept = Scale.apply(y, True)
    kept.sum().backward(retain_graph=True)  # the node (and what its ctx kept) is alive
    assert kept._node.ctx.kept is not y.grad
    y.grad += 1.0
    np.testing.assert_array_equal(kept._node.ctx.kept, np.full(3, 2.0))

    a, b = leaf(3), leaf(3, seed=1)
    (a + b).sum().backward()  # Add hands one array to both inputs
    assert a.grad is not b.grad
    a.grad += 1.0
    np.testing.assert_array_equal(b.grad, np.ones(3))

    seen = []
    c = leaf(3)
    c.register_hook(lambda g: seen.append(g))  # a hook that keeps the gradient it saw
    Scale.apply(c, False).sum().backward()
    assert c.grad is not seen[0]
    given = np.ones(3)
    d = leaf(3)
    d.backward(given)  # the caller's array
    assert d.grad is not given


# ---- the graph is freed by backward --------------------------------------------------------------
def test_second_backward_through_freed_graph_raises():
    x = leaf(3)
    loss = (x * x).sum()
    loss.backward()
    first = x.grad.copy()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        loss.backward()
    np.testing.assert_array_equal(x.grad, first)  # nothing was accumulated


def test_new_graph_through_freed_intermediate_raises_before_moving_gradients():
    x, w = leaf(3), leaf(3, seed=1)
    h = x * 2.0
    (h * h).sum().backward()
    before = x.grad.copy()
    with pytest.raises(RuntimeError, match="second time"):
        (h * w).sum().backward()  # w is fresh, h's graph is gone
    assert w.grad is None
    np.testing.assert_array_equal(x.grad, before)
    assert not h.is_leaf  # a freed tensor is not mistaken for a leaf


def test_retain_graph_allows_a_second_backward():
    x = leaf(3)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, 4 * x.data)


# ---- hooks -------------------------------------------------------------------------------------
def test_register_hook_replaces_the_gradient():
    x = leaf(3)
    handle = x.register_hook(lambda g: g * 10)
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 20.0))
    handle.remove()
    x.zero_grad()
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 2.0))


def test_hook_on_intermediate_changes_what_flows_upstream():
    x = leaf(3)
    h = x * 3.0
    seen = []
    h.register_hook(lambda g: seen.append(g.copy()) or np.zeros_like(g))
    (h * h).sum().backward()
    np.testing.assert_allclose(seen[0], 2 * h.data)
    np.testing.assert_array_equal(x.grad, np.zeros(3))


def test_hook_that_changes_the_shape_is_an_error():
    x = leaf(3)
    x.register_hook(lambda g: g[:2])
    with pytest.raises(RuntimeError, match=r"shape \(2,\) for a tensor of shape \(3,\)"):
        (x * 2.0).sum().backward()


def mlp(x, layers):
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            x = ops.relu(x)
    return x


def test_post_accumulate_hooks_fire_once_complete_last_layer_first():
    sizes = [(5, 4), (5, 5), (2, 5)]
    layers = [(leaf(*s, seed=2 * i), leaf(s[0], seed=2 * i + 1)) for i, s in enumerate(sizes)]
    shared = leaf(5, seed=11)  # used by the first and the last layer: complete only at the end
    x = Tensor(np.random.default_rng(12).standard_normal((8, 4)))
    events = []

    def record(name):
        return lambda t: events.append((name, t.grad.copy()))

    names = {}
    for i, (w, b) in enumerate(layers):
        names[f"w{i}"], names[f"b{i}"] = w, b
    names["shared"] = shared
    for name, t in names.items():
        t.register_post_accumulate_grad_hook(record(name))
    loss = (mlp(x + shared[:4], layers) * shared[:2]).sum()
    loss.backward()
    order = [name for name, _ in events]
    assert sorted(order) == sorted(names)  # each exactly once
    assert order.index("w2") < order.index("w1") < order.index("w0")
    assert order.index("b2") < order.index("b1") < order.index("b0")
    for name, grad in events:  # complete when the hook ran: nothing was added afterwards
        np.testing.assert_array_equal(grad, names[name].grad)


def test_post_accumulate_hook_only_on_leaves():
    h = leaf(3) * 2.0
    with pytest.raises(RuntimeError, match="leaf"):
        h.register_post_accumulate_grad_hook(lambda t: None)


# ---- depth, dtype, errors -------------------------------------------------------------------------
def test_deep_chain_does_not_recurse():
    x = leaf(4)
    y = x
    for _ in range(10000):
        y = y * 1.0001 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(4, 1.0001 ** 10000), rtol=1e-9)


def test_float32_graph_keeps_float32_gradients():
    x, w = leaf(4, 3, dtype=np.float32), leaf(2, 3, seed=1, dtype=np.float32)
    loss = ops.log_softmax(ops.tanh(x @ w.T) * 2.0 + np.ones(2)).mean()
    assert loss.dtype == np.float32
    loss.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_backward_argument_errors():
    y = leaf(2, 3) * 2.0
    with pytest.raises(ValueError, match=r"gradient shape \(3, 2\) does not match tensor shape \(2, 3\)"):
        y.backward(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match=r"one-element tensor \(got shape \(2, 3\)\)"):
        y.backward()


def test_function_returning_a_wrong_gradient_is_named():
    class WrongShape(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, grad):
            return grad[:, :1] * np.ones((1, 5))

    class TooMany(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    with pytest.raises(RuntimeError, match=r"WrongShape.backward returned a gradient of shape "
                                           r"\(2, 5\) for input 0 of shape \(2, 3\)"):
        WrongShape.apply(leaf(2, 3)).sum().backward()
    with pytest.raises(RuntimeError, match=r"TooMany.backward returned 2 gradient\(s\) for 1 input"):
        TooMany.apply(leaf(2, 3)).sum().backward()


# ---- gradcheck itself -----------------------------------------------------------------------------
class HalfGradient(Function):
    """x**2 with a backward that is wrong by a factor 2: gradcheck must catch it."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]


def test_gradcheck_passes_correct_and_names_a_wrong_gradient():
    x, w = leaf(3, 4), leaf(4, seed=1)
    assert gradcheck(lambda x, w: ops.tanh(x @ w), [x, w]) is True
    with pytest.raises(AssertionError) as err:
        gradcheck(lambda x, w: x @ HalfGradient.apply(w), [x, w])
    message = str(err.value)
    assert "input 1" in message and "shape (4,)" in message and "at index (" in message
    assert "analytic" in message and "numeric" in message and "4 of 4 elements" in message
    worst = tuple(int(v) for v in message.split("at index (")[1].split(")")[0].rstrip(",").split(","))
    assert len(worst) == 1 and 0 <= worst[0] < 4


def test_gradcheck_reaches_parameters_through_a_closure_and_restores_grads():
    x, w = leaf(2, 3), leaf(3, seed=1)
    w.grad = np.full(3, 7.0)
    assert gradcheck(lambda x, *_: (x * w).sum(axis=1), [x, w])
    np.testing.assert_array_equal(w.grad, np.full(3, 7.0))
    original = w.data.copy()
    with pytest.raises(AssertionError, match="input 1"):
        gradcheck(lambda x, *_: x * HalfGradient.apply(w), [x, w])
    np.testing.assert_array_equal(w.data, original)  # restored exactly after perturbing


def test_gradcheck_refuses_what_it_cannot_check():
    with pytest.raises(TypeError, match="input 0 is float32.*need float64"):
        gradcheck(lambda x: x * 2.0, [leaf(3, dtype=np.float32)])
    with pytest.raises(TypeError, match="returned a float32 tensor"):
        gradcheck(lambda x: Tensor(x.data.astype(np.float32)) * 2.0, [leaf(3)])
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(lambda x: x * 2.0, [Tensor(np.ones(3))])
    with pytest.raises(ValueError, match="not a leaf"):
        gradcheck(lambda x: x * 2.0, [leaf(3) * 1.0])


def test_numeric_grad():
    x = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(numeric_grad(lambda a: np.sin(a).sum(), x), np.cos(x), rtol=1e-8)
    np.testing.assert_array_equal(x, [0.5, -1.0, 2.0])
    t = leaf(2, 2)
    np.testing.assert_allclose(numeric_grad(lambda a: (a.data ** 3).sum(), t), 3 * t.data ** 2, rtol=1e-8)
    with pytest.raises(TypeError, match="float64"):
        numeric_grad(lambda a: a.sum(), x.astype(np.float32))


def test_reflected_pow_differentiates_the_exponent():
    from minidist.autograd import gradcheck

    t = Tensor(np.array([0.5, 1.0, 2.0]), requires_grad=True)
    assert gradcheck(lambda e: 3.0 ** e, [t])
    out = 2.0 ** Tensor(np.array([1.0, 3.0], dtype=np.float32))
    assert out.dtype == np.float32 and np.allclose(out.data, [2.0, 8.0])
