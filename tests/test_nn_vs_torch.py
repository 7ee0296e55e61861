"""Every layer against torch.nn in float64: the same state_dict loaded into both, then
forward, input gradient, parameter gradients and buffers over several training steps,
then eval outputs. Also state_dict keys of whole models and the init distributions."""
import numpy as np
import pytest

import minidist.nn as nn
from minidist import Tensor

RTOL, ATOL = 1e-10, 1e-12


def torch_twin(torch, ours, make_theirs):
    """torch's layer holding our float64 layer's exact state."""
    theirs = make_theirs(torch.nn).double()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    return theirs


def compare_step(torch, ours, theirs, x, rng, target=None):
    """One forward/backward in both; compare output, input grad, param grads, buffers."""
    mx = Tensor(x.copy(), requires_grad=True)
    tx = torch.tensor(x.copy(), requires_grad=True)
    out = ours(mx) if target is None else ours(mx, target)
    ref = theirs(tx) if target is None else theirs(tx, torch.from_numpy(target))
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg="forward")
    g = rng.standard_normal(out.shape)
    out.backward(g)
    ref.backward(torch.from_numpy(g))
    np.testing.assert_allclose(mx.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg="input grad")
    ours_p, theirs_p = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert list(ours_p) == list(theirs_p)
    for name in ours_p:
        np.testing.assert_allclose(ours_p[name].grad, theirs_p[name].grad.numpy(), rtol=1e-9, atol=1e-11,
                                   err_msg=f"grad of {name}")
    ours_b, theirs_b = dict(ours.named_buffers()), dict(theirs.named_buffers())
    assert list(ours_b) == list(theirs_b)
    for name in ours_b:
        np.testing.assert_allclose(ours_b[name].data, theirs_b[name].numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"buffer {name}")
        assert ours_b[name].data.dtype == theirs_b[name].numpy().dtype


def run_against_torch(torch, ours, make_theirs, shape, steps=3, seed=0, target=None):
    rng = np.random.default_rng(seed)
    ours = ours.to(np.float64)
    for p in ours.parameters():  # move off the default init so every parameter matters
        p.data += 0.3 * rng.standard_normal(p.shape)
    theirs = torch_twin(torch, ours, make_theirs)
    for _ in range(steps):  # several training steps: running statistics accumulate
        x = rng.standard_normal(shape) * 2.0 + 0.5
        compare_step(torch, ours, theirs, x, rng, target)
        ours.zero_grad()
        theirs.zero_grad()
    ours.eval()
    theirs.eval()
    compare_step(torch, ours, theirs, rng.standard_normal(shape), rng, target)
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=RTOL, atol=ATOL, err_msg=k)


CASES = {
    "linear": (lambda n: n.Linear(5, 4), (6, 5)),
    "linear_3d_nobias": (lambda n: n.Linear(5, 4, bias=False), (2, 3, 5)),
    "conv": (lambda n: n.Conv2d(3, 4, 3), (2, 3, 6, 5)),
    "conv_stride_padding": (lambda n: n.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2)), (2, 2, 7, 5)),
    "conv_nobias": (lambda n: n.Conv2d(2, 3, 1, stride=2, bias=False), (2, 2, 5, 5)),
    "bn1d": (lambda n: n.BatchNorm1d(4), (8, 4)),
    "bn1d_3d": (lambda n: n.BatchNorm1d(4, momentum=0.3), (5, 4, 3)),
    "bn1d_momentum_none": (lambda n: n.BatchNorm1d(4, momentum=None), (8, 4)),
    "bn2d": (lambda n: n.BatchNorm2d(3), (4, 3, 3, 2)),
    "bn2d_momentum_none": (lambda n: n.BatchNorm2d(3, momentum=None, eps=1e-3), (4, 3, 2, 2)),
    "bn2d_no_affine": (lambda n: n.BatchNorm2d(3, affine=False), (4, 3, 2, 2)),
    "bn2d_untracked": (lambda n: n.BatchNorm2d(3, track_running_stats=False), (4, 3, 2, 2)),
    "bn1d_untracked_no_affine": (lambda n: n.BatchNorm1d(3, affine=False, track_running_stats=False), (6, 3)),
    "layernorm": (lambda n: n.LayerNorm(6), (4, 6)),
    "layernorm_2d_shape": (lambda n: n.LayerNorm((3, 4), eps=1e-3), (2, 5, 3, 4)),
    "layernorm_no_affine": (lambda n: n.LayerNorm(4, elementwise_affine=False), (3, 4)),
    "layernorm_no_bias": (lambda n: n.LayerNorm(4, bias=False), (3, 4)),
    "maxpool": (lambda n: n.MaxPool2d(2), (2, 3, 6, 5)),
    "maxpool_stride_padding": (lambda n: n.MaxPool2d(3, stride=2, padding=1), (2, 2, 7, 6)),
    "relu": (lambda n: n.ReLU(), (4, 5)),
    "sigmoid": (lambda n: n.Sigmoid(), (4, 5)),
    "tanh": (lambda n: n.Tanh(), (4, 5)),
    "flatten": (lambda n: n.Flatten(), (2, 3, 4)),
    "flatten_range": (lambda n: n.Flatten(0, 1), (2, 3, 4)),
    "sequential": (lambda n: n.Sequential(n.Conv2d(2, 3, 3, padding=1), n.BatchNorm2d(3), n.ReLU(),
                                          n.MaxPool2d(2), n.Flatten(), n.Linear(12, 5), n.LayerNorm(5),
                                          n.Tanh()), (3, 2, 4, 4)),
}


@pytest.mark.parametrize("name", CASES)
def test_layer_matches_torch(torch, name):
    make, shape = CASES[name]
    run_against_torch(torch, make(nn), make, shape)


def test_training_mode_after_eval_resumes_statistics(torch):
    make = lambda n: n.BatchNorm1d(3, momentum=None)  # noqa: E731
    ours = make(nn).to(np.float64)
    theirs = torch_twin(torch, ours, make)
    rng = np.random.default_rng(3)
    for mode in ("train", "eval", "train", "train"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        compare_step(torch, ours, theirs, rng.standard_normal((5, 3)) + 1.0, rng)
    assert ours.num_batches_tracked.data == 3


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_torch(torch, reduction):
    target = np.array([2, 0, 1, 1, 2], dtype=np.int64)
    run_against_torch(torch, nn.CrossEntropyLoss(reduction=reduction),
                      lambda n: n.CrossEntropyLoss(reduction=reduction), (5, 3), steps=1, target=target)
    y = np.random.default_rng(1).standard_normal((5, 3))
    run_against_torch(torch, nn.MSELoss(reduction=reduction),
                      lambda n: n.MSELoss(reduction=reduction), (5, 3), steps=1, target=y)


# ---- whole models: state_dict layout ------------------------------------------------------------
def _cnn(n, **kw):
    return n.Sequential(
        n.Sequential(n.Conv2d(1, 4, 3, padding=1, **kw), n.BatchNorm2d(4), n.ReLU(), n.MaxPool2d(2)),
        n.Flatten(),
        n.Linear(4 * 4 * 4, 16, **kw), n.BatchNorm1d(16, momentum=None), n.ReLU(),
        n.Linear(16, 10, bias=False, **kw), n.LayerNorm(10))


def test_state_dict_layout_matches_torch(torch):
    ours, theirs = _cnn(nn), _cnn(torch.nn)
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert list(sd_ours) == list(sd_theirs)
    for k in sd_ours:
        assert sd_ours[k].shape == tuple(sd_theirs[k].shape), k
        assert sd_ours[k].dtype == sd_theirs[k].numpy().dtype, k  # float32 and int64 as torch
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    # torch's trained-looking state loads into ours and both compute the same thing
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    theirs.double().train()
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8))
    theirs(torch.from_numpy(x))
    ours.to(np.float64).load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


# ---- default initialisation --------------------------------------------------------------------
@pytest.mark.parametrize("make, fan_in", [
    (lambda n, **kw: n.Linear(60, 300, **kw), 60),
    (lambda n, **kw: n.Conv2d(5, 64, (3, 4), **kw), 60),
])
def test_init_distribution_as_torch(torch, make, fan_in):
    ours = make(nn, rng=np.random.default_rng(0))
    torch.manual_seed(0)
    theirs = make(torch.nn)
    bound = 1 / np.sqrt(fan_in)
    for name in ("weight", "bias"):
        a = getattr(ours, name).data
        b = getattr(theirs, name).detach().numpy()
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32
        assert np.abs(a).max() <= bound and np.abs(b).max() <= bound
        # U(-bound, bound): the extremes come close to the bound, std is bound / sqrt(3)
        assert np.abs(a).max() > 0.9 * bound
        tol = 0.1 if a.size > 1000 else 0.3
        assert abs(a.std() / (bound / np.sqrt(3)) - 1) < tol
        assert abs(a.std() / b.std() - 1) < 2 * tol
        assert abs(a.mean()) < 4 * bound / np.sqrt(3 * a.size)


def test_norm_init_equals_torch(torch):
    for make in (lambda n: n.BatchNorm2d(5), lambda n: n.BatchNorm1d(3, affine=False), lambda n: n.LayerNorm((2, 3))):
        ours, theirs = make(nn).state_dict(), make(torch.nn).state_dict()
        assert list(ours) == list(theirs)
        for k in ours:
            np.testing.assert_array_equal(ours[k], theirs[k].numpy())
