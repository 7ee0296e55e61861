"""F.batch_norm, the SyncBatchNorm pieces, and F.layer_norm."""
import numpy as np
import pytest

from functional_helpers import check_grads, close, matches_torch, to_torch
from minidist import Tensor
from minidist.nn import functional as F

BN_SHAPES = [(5, 3), (3, 2, 4), (2, 3, 3, 2)]  # (N, C), (N, C, L), (N, C, H, W)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_train_gradcheck(shape):
    rng = np.random.default_rng(0)
    c = shape[1]
    check_grads(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c), rng.standard_normal(c))


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_train_gradcheck_no_affine_and_eval(shape):
    rng = np.random.default_rng(1)
    c = shape[1]
    check_grads(lambda x: F.batch_norm(x, np.zeros(c), np.ones(c), training=True), rng.standard_normal(shape))
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    check_grads(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False),
                rng.standard_normal(shape), rng.standard_normal(c), rng.standard_normal(c))


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
def test_batch_norm_matches_torch_over_several_steps(torch, shape, momentum):
    """Train-mode calls update the running stats exactly as torch's module does (momentum
    None: cumulative average, factor 1/k as the module passes it); then eval uses them."""
    rng = np.random.default_rng(2)
    c = shape[1]
    ref = torch.nn.BatchNorm1d(c, momentum=momentum) if len(shape) < 4 else torch.nn.BatchNorm2d(c, momentum=momentum)
    ref = ref.double()
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(w))
        ref.bias.copy_(torch.tensor(b))
    rm, rv = np.zeros(c), np.ones(c)
    mw, mb = Tensor(w.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True)
    for step in range(1, 4):
        x = rng.standard_normal(shape) * step + step
        mx, tx = Tensor(x, requires_grad=True), to_torch(torch, x)
        factor = 1.0 / step if momentum is None else momentum
        out = F.batch_norm(mx, rm, rv, mw, mb, training=True, momentum=factor)
        expected = ref(tx)
        close(out, expected)
        g = rng.standard_normal(shape)
        out.backward(g)
        expected.backward(torch.tensor(g))
        close(mx.grad, tx.grad)
        close(rm, ref.running_mean)
        close(rv, ref.running_var)
    close(mw.grad, ref.weight.grad)
    close(mb.grad, ref.bias.grad)
    ref.eval()
    x = rng.standard_normal(shape)
    mx, tx = Tensor(x, requires_grad=True), to_torch(torch, x)
    out, expected = F.batch_norm(mx, rm, rv, mw, mb, training=False), ref(tx)
    close(out, expected)
    g = rng.standard_normal(shape)
    out.backward(g)
    expected.backward(torch.tensor(g))
    close(mx.grad, tx.grad)
    close(mw.grad, ref.weight.grad)
    close(mb.grad, ref.bias.grad)


def test_batch_norm_float32_and_in_place_buffers():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), requires_grad=True)
    w = Tensor(np.ones(4, np.float32), requires_grad=True)
    b = Tensor(np.zeros(4, np.float32), requires_grad=True)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    rm_id, rv_id = id(rm), id(rv)
    out = F.batch_norm(x, rm, rv, w, b, training=True)
    assert out.dtype == np.float32 and rm.dtype == rv.dtype == np.float32
    assert id(rm) == rm_id and id(rv) == rv_id and not np.all(rm == 0)
    out.sum().backward()
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    # buffers given as Tensors are updated through .data
    trm = Tensor(np.zeros(4, np.float32))
    F.batch_norm(x, trm, Tensor(np.ones(4, np.float32)), training=True)
    np.testing.assert_allclose(trm.data, rm, rtol=1e-6)


def test_batch_norm_float32_with_large_offset_stays_accurate():
    """x = 1000 + small noise in float32: centring before scaling avoids cancellation
    (scaling x and mean separately, then subtracting, loses about 5x more here). The
    reference is float64 arithmetic on the same float32-rounded input."""
    rng = np.random.default_rng(9)
    x64 = (1000 + 0.01 * rng.standard_normal((16, 3, 4, 4))).astype(np.float32).astype(np.float64)
    w, b, g = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(x64.shape)
    results = {}
    for dtype in (np.float32, np.float64):
        mx = Tensor(x64.astype(dtype), requires_grad=True)
        out = F.batch_norm(mx, None, None, Tensor(w.astype(dtype)), Tensor(b.astype(dtype)), training=True)
        out.backward(g.astype(dtype))
        results[dtype] = out.data, mx.grad
    for got, want in zip(results[np.float32], results[np.float64]):
        np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())


def test_batch_norm_errors():
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, got input size \(1, 3\)"):
        F.batch_norm(Tensor(np.ones((1, 3))), None, None, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(Tensor(np.ones((1, 3, 1))), np.zeros(3), np.ones(3), training=True)
    F.batch_norm(Tensor(np.ones((1, 3))), np.zeros(3), np.ones(3), training=False)  # eval: fine
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\)"):
        F.batch_norm(Tensor(np.ones((2, 3))), np.zeros(4), np.ones(3), training=True)
    with pytest.raises(ValueError, match="eval mode .* needs running_mean"):
        F.batch_norm(Tensor(np.ones((2, 3))), None, None)
    with pytest.raises(ValueError, match="momentum=None"):
        F.batch_norm(Tensor(np.ones((2, 3))), np.zeros(3), np.ones(3), training=True, momentum=None)
    with pytest.raises(ValueError, match="at least 2D"):
        F.batch_norm(Tensor(np.ones(3)), None, None, training=True)


@pytest.mark.parametrize("shape", [(6, 3), (6, 2, 5), (6, 3, 2, 2)])
def test_sync_pieces_over_shards_equal_whole_batch(shape):
    """Per-shard sums added up (what SyncBatchNorm all-reduces) give the whole batch's
    forward, running stats and input gradient."""
    rng = np.random.default_rng(4)
    c = shape[1]
    x, w, b, g = rng.standard_normal(shape) + 3, rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(shape)
    rm, rv = np.zeros(c), np.ones(c)
    mx, mw, mb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    whole = F.batch_norm(mx, rm, rv, mw, mb, training=True, momentum=0.3)
    whole.backward(g)

    shards, gshards = np.split(x, 3), np.split(g, 3)
    stats = [F.batch_norm_stats(s) for s in shards]
    s, ss, n = (sum(parts) for parts in zip(*stats))
    srm, srv = np.zeros(c), np.ones(c)
    mean, invstd = F.batch_norm_gather_stats(s, ss, n, srm, srv, momentum=0.3, eps=1e-5)
    np.testing.assert_allclose(srm, rm, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(srv, rv, rtol=1e-10)
    ys = [F.batch_norm_elemt(sh, mean, invstd, w, b) for sh in shards]
    np.testing.assert_allclose(np.concatenate(ys), whole.data, atol=1e-10)
    reduced = [F.batch_norm_backward_reduce(gs, sh, mean, invstd) for gs, sh in zip(gshards, shards)]
    sum_dy, sum_dy_xmu, dw, db = (sum(parts) for parts in zip(*reduced))
    np.testing.assert_allclose(dw, mw.grad, atol=1e-10)
    np.testing.assert_allclose(db, mb.grad, atol=1e-10)
    dx = [F.batch_norm_backward_elemt(gs, sh, mean, invstd, w, sum_dy, sum_dy_xmu, n) for gs, sh in zip(gshards, shards)]
    np.testing.assert_allclose(np.concatenate(dx), mx.grad, atol=1e-10)


def test_sync_gather_stats_rejects_single_value():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm_gather_stats(np.ones(2), np.ones(2), 1)


LN_CASES = [((4, 5), 5), ((2, 3, 4), (3, 4)), ((3, 2, 6), 6)]


@pytest.mark.parametrize("shape, norm", LN_CASES)
def test_layer_norm_gradcheck(shape, norm):
    rng = np.random.default_rng(5)
    ns = (norm,) if isinstance(norm, int) else norm
    check_grads(lambda x, w, b: F.layer_norm(x, norm, w, b),
                rng.standard_normal(shape) * 3, rng.standard_normal(ns), rng.standard_normal(ns))
    check_grads(lambda x: F.layer_norm(x, norm), rng.standard_normal(shape))


@pytest.mark.parametrize("shape, norm", LN_CASES)
def test_layer_norm_matches_torch(torch, shape, norm):
    rng = np.random.default_rng(6)
    ns = (norm,) if isinstance(norm, int) else norm
    x, w, b = rng.standard_normal(shape), rng.standard_normal(ns), rng.standard_normal(ns)
    mx, mw, mb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (to_torch(torch, a) for a in (x, w, b))
    out, ref = F.layer_norm(mx, norm, mw, mb, eps=1e-3), torch.nn.functional.layer_norm(tx, ns, tw, tb, eps=1e-3)
    matches_torch(torch, out, ref, [(mx, tx), (mw, tw), (mb, tb)], rng)


def test_layer_norm_float32_and_errors():
    x = Tensor(np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    w = Tensor(np.ones(4, np.float32), requires_grad=True)
    out = F.layer_norm(x, 4, w)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == w.grad.dtype == np.float32
    with pytest.raises(ValueError, match=r"must end with normalized_shape \(5,\)"):
        F.layer_norm(x, 5)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        F.layer_norm(x, 4, Tensor(np.ones(3)))
