"""F.linear, the activations, dropout and the losses (conv/pool and the norms have their
own files: test_functional_conv.py, test_functional_norm.py)."""
import numpy as np
import pytest

from functional_helpers import check_grads, close, matches_torch, to_torch
from minidist import Tensor
from minidist.nn import functional as F


# ---- linear -------------------------------------------------------------------------------
@pytest.mark.parametrize("xshape", [(4, 3), (2, 3, 3), (3,)])
def test_linear_gradcheck(xshape):
    rng = np.random.default_rng(0)
    check_grads(F.linear, rng.standard_normal(xshape), rng.standard_normal((5, 3)), rng.standard_normal(5))
    check_grads(lambda x, w: F.linear(x, w), rng.standard_normal(xshape), rng.standard_normal((2, 3)))


def test_linear_matches_torch_and_keeps_float32(torch):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 4, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    mine = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    theirs = [to_torch(torch, a) for a in (x, w, b)]
    out, ref = F.linear(*mine), torch.nn.functional.linear(*theirs)
    matches_torch(torch, out, ref, zip(mine, theirs), rng)
    m32 = [Tensor(a.astype(np.float32), requires_grad=True) for a in (x, w, b)]
    out = F.linear(*m32)
    assert out.dtype == np.float32
    out.sum().backward()
    assert all(t.grad.dtype == np.float32 for t in m32)


def test_linear_errors():
    with pytest.raises(ValueError, match=r"last dimension must equal weight's in_features=3"):
        F.linear(Tensor(np.ones((2, 4))), Tensor(np.ones((5, 3))))
    with pytest.raises(ValueError, match="weight must be 2D"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones(3)))
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((5, 3))), Tensor(np.ones(4)))


# ---- activations (delegated to the autograd ops) ---------------------------------------------
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "log_softmax"])
def test_activations_gradcheck_and_match_torch(torch, name):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5)) + 0.05  # away from relu's kink at 0
    fn = getattr(F, name)
    check_grads(fn, x)
    ref_fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
              "log_softmax": lambda t: torch.log_softmax(t, dim=-1)}[name]
    close(fn(Tensor(x)), ref_fn(torch.tensor(x)))


def test_log_softmax_dim():
    x = np.random.default_rng(3).standard_normal((3, 4))
    check_grads(lambda t: F.log_softmax(t, dim=0), x)
    np.testing.assert_allclose(np.exp(F.log_softmax(Tensor(x), dim=0).data).sum(axis=0), 1.0)


# ---- dropout ------------------------------------------------------------------------------
def test_dropout_mask_scaling_and_gradient():
    x = Tensor(np.ones((200, 50), np.float32), requires_grad=True)
    out = F.dropout(x, p=0.3, training=True, rng=np.random.default_rng(4))
    assert out.dtype == np.float32
    kept = out.data != 0
    np.testing.assert_allclose(out.data[kept], 1 / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.02  # 10000 draws: 4+ standard deviations
    g = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    out.backward(g)
    np.testing.assert_allclose(x.grad, g * out.data, rtol=1e-6)
    # the same seed gives the same mask
    again = F.dropout(Tensor(np.ones((200, 50), np.float32)), p=0.3, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(again.data, out.data)


def test_dropout_identity_cases_and_errors():
    x = Tensor(np.ones((3, 4)), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x
    assert not F.dropout(x, 1.0, rng=np.random.default_rng(0)).data.any()
    with pytest.raises(ValueError, match="needs rng=np.random.Generator"):
        F.dropout(x, 0.5, training=True)
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        F.dropout(x, 1.5, rng=np.random.default_rng(0))


# ---- cross-entropy and nll ----------------------------------------------------------------------
def test_cross_entropy_gradcheck():
    rng = np.random.default_rng(6)
    t = np.array([0, 3, 1, 3])
    for reduction in ("mean", "sum", "none"):
        check_grads(lambda x: F.cross_entropy(x, t, reduction), rng.standard_normal((4, 5)))
    t3 = rng.integers(0, 3, size=(2, 4))
    check_grads(lambda x: F.cross_entropy(x, t3), rng.standard_normal((2, 3, 4)))  # (N, C, d)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_class_losses_match_torch(torch, loss, reduction):
    rng = np.random.default_rng(7)
    cases = [(rng.standard_normal((6, 4)), rng.integers(0, 4, 6)),
             (rng.standard_normal((2, 4, 3, 2)), rng.integers(0, 4, (2, 3, 2))),
             (rng.standard_normal(5), np.array(2))]
    targets_ignored = np.array([1, -100, 0, 3, -100, 2])
    cases.append((rng.standard_normal((6, 4)), targets_ignored))
    for x, t in cases:
        if loss == "nll_loss":
            x = x - np.log(np.exp(x).sum(axis=0 if x.ndim == 1 else 1, keepdims=True))
        mx, tx = Tensor(x, requires_grad=True), to_torch(torch, x)
        out = getattr(F, loss)(mx, t, reduction=reduction)
        ref = getattr(torch.nn.functional, loss)(tx, torch.tensor(t), reduction=reduction)
        matches_torch(torch, out, ref, [(mx, tx)], rng)


def test_cross_entropy_is_stable_and_keeps_float32():
    x = Tensor(np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], np.float32), requires_grad=True)
    loss = F.cross_entropy(x, np.array([0, 2]))
    assert loss.dtype == np.float32 and np.isfinite(loss.data)
    np.testing.assert_allclose(loss.data, 5e4 / 2, rtol=1e-6)
    loss.backward()
    assert x.grad.dtype == np.float32 and np.isfinite(x.grad).all()
    np.testing.assert_allclose(x.grad, [[0, 0, 0], [0, 0.5, -0.5]], atol=1e-6)


def test_cross_entropy_errors():
    x = Tensor(np.zeros((3, 5)))
    with pytest.raises(IndexError, match=r"target value 7 is out of bounds for 5 classes"):
        F.cross_entropy(x, np.array([0, 7, 1]))
    with pytest.raises(IndexError, match=r"target value -1 is out of bounds"):
        F.nll_loss(x, np.array([0, -1, 1]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"target shape \(2,\) does not match input shape \(3, 5\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"unbatched input of shape \(5,\) needs a 0D target"):
        F.cross_entropy(Tensor(np.zeros(5)), np.array([1, 2]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")


# ---- mse --------------------------------------------------------------------------------
def test_mse_gradcheck_both_arguments():
    rng = np.random.default_rng(8)
    for reduction in ("mean", "sum", "none"):
        check_grads(lambda a, b: F.mse_loss(a, b, reduction), rng.standard_normal((3, 4)), rng.standard_normal((3, 4)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_torch(torch, reduction):
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 2, 3))
    mx, tx = Tensor(x, requires_grad=True), to_torch(torch, x)
    out = F.mse_loss(mx, y, reduction)
    ref = torch.nn.functional.mse_loss(tx, torch.tensor(y), reduction=reduction)
    matches_torch(torch, out, ref, [(mx, tx)], rng)


def test_mse_float32_and_errors():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    out = F.mse_loss(x, np.zeros((2, 3)))  # float64 array target follows the input
    assert out.dtype == np.float32
    out.backward()
    assert x.grad.dtype == np.float32
    with pytest.raises(ValueError, match=r"input shape \(2, 3\) and target shape \(3,\) differ"):
        F.mse_loss(x, np.zeros(3))
