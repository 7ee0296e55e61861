"""F.conv2d and F.max_pool2d: gradient checks, torch comparisons, errors."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from functional_helpers import check_grads, close, matches_torch, to_torch
from strategies import conv2d_geometries, max_pool2d_geometries
from minidist import Tensor
from minidist.nn import conv_ops, functional as F

GEOMETRIES = [  # (x shape, weight shape, stride, padding)
    ((2, 3, 5, 6), (4, 3, 3, 2), (2, 1), (1, 2)),  # non-square kernel, mixed stride/padding
    ((1, 2, 4, 4), (3, 2, 1, 1), 1, 0),  # 1x1 kernel
    ((2, 1, 7, 5), (2, 1, 3, 3), 2, 1),
    ((3, 2, 6, 6), (2, 2, 2, 4), 3, 0),  # stride > kernel height: gaps in the input
    ((2, 3, 3, 3), (4, 3, 3, 3), 1, 0),  # 1x1 output, many weights: the other dW path
]


@pytest.mark.parametrize("xs, ws, stride, padding", GEOMETRIES)
def test_conv2d_gradcheck(xs, ws, stride, padding):
    rng = np.random.default_rng(1)
    check_grads(lambda x, w, b: F.conv2d(x, w, b, stride, padding),
                rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0]))


def test_conv2d_gradcheck_without_bias():
    rng = np.random.default_rng(2)
    check_grads(lambda x, w: F.conv2d(x, w, None, 1, 1),
                rng.standard_normal((2, 2, 4, 3)), rng.standard_normal((3, 2, 2, 3)))


@pytest.mark.parametrize("xs, ws, stride, padding", GEOMETRIES)
def test_conv2d_matches_torch(torch, xs, ws, stride, padding):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    mx, mw, mb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (to_torch(torch, a) for a in (x, w, b))
    out = F.conv2d(mx, mw, mb, stride, padding)
    ref = torch.nn.functional.conv2d(tx, tw, tb, stride, padding)
    matches_torch(torch, out, ref, [(mx, tx), (mw, tw), (mb, tb)], rng)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("stride, padding", [(1, 1), (1, 0), ((1, 1), (2, 1)), (2, 1)])
def test_conv2d_with_nan_and_inf_matches_torch(torch, stride, padding):
    """Non-finite inputs and gradients land where torch puts them, on both input-gradient
    paths (stride 1: the full convolution over the padded width, whose extra positions
    read on into the next row; other strides: col2im) and with the kept columns."""
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    x[0, 1, 2, 0], x[1, 2, 5, 6], x[1, 0, 0, 3] = np.nan, np.inf, -np.inf
    mx, mw, mb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (to_torch(torch, a) for a in (x, w, b))
    out = F.conv2d(mx, mw, mb, stride, padding)
    ref = torch.nn.functional.conv2d(tx, tw, tb, stride, padding)
    close(out, ref)
    g = rng.standard_normal(out.shape)
    g[0, 2, 1, -1], g[1, 0, -1, 0], g[1, 3, 0, 0] = np.inf, np.nan, -np.inf
    out.backward(g)
    ref.backward(torch.tensor(g))
    for mine, theirs in ((mx, tx), (mw, tw), (mb, tb)):
        close(mine.grad, theirs.grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_rebuilt_columns_give_the_kept_columns_results(monkeypatch, dtype):
    """Above KEEP_COLUMNS_UP_TO backward rebuilds the columns from x: same bits."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((3, 2, 7, 6)).astype(dtype), rng.standard_normal((5, 2, 3, 3)).astype(dtype)

    def grads():
        mx, mw = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        F.conv2d(mx, mw, padding=1).backward(np.ones((3, 5, 7, 6), dtype))
        return mx.grad, mw.grad

    kept = grads()
    monkeypatch.setattr(conv_ops, "KEEP_COLUMNS_UP_TO", 0)
    rebuilt = grads()
    assert all(a.dtype == dtype and np.array_equal(a, b) for a, b in zip(kept, rebuilt, strict=True))


def test_conv2d_keeps_no_columns_without_a_graph():
    """Under no_grad nothing runs backward: the columns stay in scratch, not in the pool
    of arrays that may be saved."""
    from minidist import no_grad
    from minidist.autograd import workspace

    workspace.clear()
    w = Tensor(np.ones((2, 3, 3, 3)), requires_grad=True)
    with no_grad():
        F.conv2d(Tensor(np.ones((4, 3, 5, 5))), w, padding=1)
    assert (4, 3, 3, 3, 5, 5) not in [shape for shape, _ in workspace._buffers.pools]
    F.conv2d(Tensor(np.ones((4, 3, 5, 5))), w, padding=1)
    assert (4, 3, 3, 3, 5, 5) in [shape for shape, _ in workspace._buffers.pools]
    workspace.clear()


def test_conv2d_keeps_float32():
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    b = Tensor(np.zeros(4, np.float32), requires_grad=True)
    out = F.conv2d(x, w, b, padding=1)
    assert out.dtype == np.float32 and out.shape == (2, 4, 6, 6)
    out.sum().backward()
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32


def test_conv2d_errors():
    x = Tensor(np.zeros((2, 3, 5, 5)))
    w = Tensor(np.zeros((4, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"expected 4D input .*got 3D"):
        F.conv2d(Tensor(np.zeros((3, 5, 5))), w)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        F.conv2d(Tensor(np.zeros((2, 2, 5, 5))), w)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        F.conv2d(x, w, Tensor(np.zeros(3)))
    with pytest.raises(TypeError, match="stride must be an int or a pair"):
        F.conv2d(x, w, stride=(1, 2, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="does not fit"):
        F.conv2d(x, Tensor(np.zeros((4, 3, 7, 1))))


POOLS = [  # (x shape, kernel, stride, padding)
    ((2, 2, 6, 6), 2, None, 0),  # the usual non-overlapping 2x2
    ((1, 3, 7, 6), 3, 2, 1),  # overlapping windows and -inf padding
    ((2, 1, 5, 7), (2, 3), (1, 2), (1, 1)),  # rectangular, overlapping in H
    ((1, 2, 5, 5), 3, 1, 0),  # heavy overlap: each element in up to 9 windows
]


@pytest.mark.parametrize("xs, kernel, stride, padding", POOLS)
def test_max_pool2d_gradcheck(xs, kernel, stride, padding):
    x = np.random.default_rng(5).permutation(np.prod(xs)).reshape(xs) * 0.1  # distinct: no ties
    check_grads(lambda t: F.max_pool2d(t, kernel, stride, padding), x)


@pytest.mark.parametrize("xs, kernel, stride, padding", POOLS)
def test_max_pool2d_matches_torch(torch, xs, kernel, stride, padding):
    rng = np.random.default_rng(6)
    _max_pool_matches_torch(torch, rng.standard_normal(xs), kernel, stride, padding, rng)


def test_max_pool2d_ties_go_to_first_maximum(torch):
    # integer-valued input: many ties inside windows, overlapping windows
    x = np.random.default_rng(7).integers(0, 3, size=(2, 2, 6, 6)).astype(np.float64)
    mx, tx = Tensor(x, requires_grad=True), to_torch(torch, x)
    out = F.max_pool2d(mx, 3, 2, 1)
    ref = torch.nn.functional.max_pool2d(tx, 3, 2, 1)
    matches_torch(torch, out, ref, [(mx, tx)], np.random.default_rng(8))


@pytest.mark.parametrize("xs, kernel", [((2, 3, 6, 4), 2), ((1, 2, 6, 6), (3, 2)), ((2, 1, 4, 6), (1, 3))])
def test_max_pool2d_tiling_windows_with_ties_nan_and_minus_inf_match_torch(torch, xs, kernel):
    """stride == kernel, no padding, H and W multiples of it: the tiled input gradient."""
    rng = np.random.default_rng(9)
    x = rng.integers(-2, 3, size=xs).astype(np.float64)  # small integers: ties in most windows
    u = rng.random(xs)
    x[u < 0.1], x[(u > 0.1) & (u < 0.3)] = np.nan, -np.inf
    mx, tx = Tensor(x, requires_grad=True), to_torch(torch, x)
    out, ref = F.max_pool2d(mx, kernel), torch.nn.functional.max_pool2d(tx, kernel)
    np.testing.assert_array_equal(out.data, ref.detach().numpy())
    g = rng.standard_normal(out.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_array_equal(mx.grad, tx.grad.numpy())


def test_max_pool2d_keeps_float32_and_errors():
    x = Tensor(np.ones((1, 1, 4, 4), np.float32), requires_grad=True)
    out = F.max_pool2d(x, 2)
    assert out.dtype == np.float32 and out.shape == (1, 1, 2, 2)
    out.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad[0, 0], np.array([[1, 0, 1, 0], [0, 0, 0, 0]] * 2))
    with pytest.raises(ValueError, match="pad should be at most half of kernel size"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"expected 4D input .*got 2D"):
        F.max_pool2d(Tensor(np.ones((4, 4))), 2)
    with pytest.raises(ValueError, match="does not fit"):
        F.max_pool2d(x, 5)


# ---- random geometries against torch ------------------------------------------------------
# (the torch fixture only hands over the module, so sharing it across examples is safe)
RANDOM = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@RANDOM
@given(geometry=conv2d_geometries())
def test_conv2d_random_geometries_match_torch(torch, geometry):
    xs, ws, stride, padding = geometry
    rng = np.random.default_rng(sum(xs + ws))
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    mx, mw, mb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (to_torch(torch, a) for a in (x, w, b))
    out, ref = F.conv2d(mx, mw, mb, stride, padding), torch.nn.functional.conv2d(tx, tw, tb, stride, padding)
    matches_torch(torch, out, ref, [(mx, tx), (mw, tw), (mb, tb)], rng)


@RANDOM
@given(geometry=max_pool2d_geometries())
def test_max_pool2d_random_geometries_match_torch(torch, geometry):
    xs, kernel, stride, padding = geometry
    rng = np.random.default_rng(sum(xs + kernel))
    x = rng.integers(-2, 3, size=xs).astype(np.float64)  # small integers: ties are common
    _max_pool_matches_torch(torch, x, kernel, stride, padding, rng)


def _max_pool_matches_torch(torch, x, kernel, stride, padding, rng):
    """Forward and input gradient of F.max_pool2d equal torch's (first max on ties)."""
    mx, tx = Tensor(x, requires_grad=True), to_torch(torch, x)
    out = F.max_pool2d(mx, kernel, stride, padding)
    ref = torch.nn.functional.max_pool2d(tx, kernel, stride, padding)
    matches_torch(torch, out, ref, [(mx, tx)], rng)
