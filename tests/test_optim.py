"""Optimizers: 10-step trajectories equal to torch.optim's in float64, state_dict round
trips, grad-None skipping, state accounting, argument errors."""
import numpy as np
import pytest

from minidist import Tensor
from minidist.nn import Parameter
from minidist.optim import SGD, Adam, AdamW

STEPS = 10
RNG = np.random.default_rng(1234)
A = RNG.standard_normal((6, 4))
TARGET = RNG.standard_normal((6, 3))
INIT = [RNG.standard_normal((4, 3)), RNG.standard_normal(3), RNG.standard_normal((2, 2))]


def gradients(values, step):
    """A fixed non-quadratic problem: d/dW sum(log cosh(A W + b - T)); the third
    parameter's gradient exists only on even steps (odd steps: None, to be skipped)."""
    W, b, c = values
    r = np.tanh(A @ W + b - TARGET)
    extra = np.sin(c) + 0.3 * c if step % 2 == 0 else None
    return [A.T @ r, r.sum(axis=0), extra]


def run_ours(make_opt, steps=STEPS, params=None, opt=None, start=0):
    params = params or [Parameter(v.copy()) for v in INIT]
    opt = opt or make_opt(params)
    history = []
    for step in range(start, start + steps):
        opt.zero_grad()
        for p, g in zip(params, gradients([p.data for p in params], step)):
            p.grad = g
        opt.step()
        history.append([p.data.copy() for p in params])
    return params, opt, history


def run_torch(torch, make_opt, steps=STEPS):
    params = [torch.tensor(v.copy(), requires_grad=True) for v in INIT]
    opt = make_opt(params)
    history = []
    for step in range(steps):
        opt.zero_grad()
        for p, g in zip(params, gradients([p.detach().numpy() for p in params], step)):
            p.grad = None if g is None else torch.tensor(g)
        opt.step()
        history.append([p.detach().numpy().copy() for p in params])
    return history


CONFIGS = {
    "sgd": ("SGD", dict(lr=0.05)),
    "sgd_momentum": ("SGD", dict(lr=0.05, momentum=0.9)),
    "sgd_dampening": ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    "sgd_nesterov": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    "adam": ("Adam", dict(lr=0.01)),
    "adam_betas_eps": ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6)),
    "adam_weight_decay": ("Adam", dict(lr=0.01, weight_decay=0.1)),
    "adam_amsgrad": ("Adam", dict(lr=0.01, amsgrad=True)),
    "adamw": ("AdamW", dict(lr=0.01)),
    "adamw_weight_decay": ("AdamW", dict(lr=0.01, weight_decay=0.3)),
}
OURS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


@pytest.mark.parametrize("name", CONFIGS)
def test_trajectory_matches_torch(torch, name):
    cls, kwargs = CONFIGS[name]
    _, _, ours = run_ours(lambda ps: OURS[cls](ps, **kwargs))
    ref = run_torch(torch, lambda ps: getattr(torch.optim, cls)(ps, **kwargs))
    for step, (mine, theirs) in enumerate(zip(ours, ref)):
        for i, (a, b) in enumerate(zip(mine, theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13, err_msg=f"{name}: step {step}, param {i}")
    # the update moved the parameters, and the None-grad steps left the third one alone
    assert not np.allclose(ours[-1][0], INIT[0])
    np.testing.assert_array_equal(ours[1][2], ours[0][2])


def _assert_plain(obj, path="state_dict"):
    """Only NumPy arrays, numbers, strings, bools, None, and lists/tuples/dicts of them."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (int, str)), f"{path}: key {k!r}"
            _assert_plain(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _assert_plain(v, f"{path}[{i}]")
    else:
        assert obj is None or isinstance(obj, (np.ndarray, int, float, str, bool)), f"{path}: {type(obj)}"


@pytest.mark.parametrize("name", ["sgd_momentum", "adam_amsgrad", "adamw_weight_decay"])
def test_state_dict_round_trip_resumes_identically(name):
    cls, kwargs = CONFIGS[name]
    make = lambda ps: OURS[cls](ps, **kwargs)  # noqa: E731
    _, _, straight = run_ours(make, steps=STEPS)
    params, opt, _ = run_ours(make, steps=4)
    saved = opt.state_dict()
    _assert_plain(saved)
    # a fresh optimizer over fresh parameters holding the same values
    params2 = [Parameter(p.data.copy()) for p in params]
    opt2 = make(params2)
    opt2.load_state_dict(saved)
    _, _, resumed = run_ours(make, steps=STEPS - 4, params=params2, opt=opt2, start=4)
    for a, b in zip(resumed[-1], straight[-1]):
        np.testing.assert_array_equal(a, b)
    # the saved arrays are copies: stepping the original on does not change them
    run_ours(make, steps=1, params=params, opt=opt, start=4)
    key = "momentum_buffer" if cls == "SGD" else "exp_avg"
    assert not np.array_equal(saved["state"][0][key], opt.state[params[0]][key])


def test_load_state_dict_rejects_mismatched_optimizer():
    params, opt, _ = run_ours(lambda ps: Adam(ps, lr=0.01), steps=2)
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="parameter group 0 has 3 parameters.*but 2"):
        Adam([Parameter(v.copy()) for v in INIT[:2]]).load_state_dict(saved)
    wrong = [Parameter(np.zeros((4, 3))), Parameter(np.zeros(5)), Parameter(np.zeros((2, 2)))]
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(5,\)"):
        Adam(wrong).load_state_dict(saved)


def test_load_state_dict_restores_hyperparameters():
    _, opt, _ = run_ours(lambda ps: SGD(ps, lr=0.5, momentum=0.9), steps=1)
    other = SGD([Parameter(v.copy()) for v in INIT], lr=0.1, momentum=0.1)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["lr"] == 0.5 and other.param_groups[0]["momentum"] == 0.9


def test_state_nbytes_counts_buffers():
    n_elem = sum(v.size for v in INIT)
    _, plain, _ = run_ours(lambda ps: SGD(ps, lr=0.1), steps=2)
    _, mom, _ = run_ours(lambda ps: SGD(ps, lr=0.1, momentum=0.9), steps=2)
    _, adam, _ = run_ours(lambda ps: Adam(ps), steps=2)
    _, ams, _ = run_ours(lambda ps: Adam(ps, amsgrad=True), steps=2)
    assert plain.state_nbytes() == 0
    assert mom.state_nbytes() == 8 * n_elem
    assert adam.state_nbytes() == 2 * 8 * n_elem
    assert ams.state_nbytes() == 3 * 8 * n_elem
    fresh = Adam([Parameter(np.zeros((3, 3), dtype=np.float32))])
    assert fresh.state_nbytes() == 0  # no state before the first step


def test_update_is_in_place_and_zero_grad_sets_none():
    p = Parameter(np.ones(3))
    buf = p.data
    opt = SGD([p], lr=0.5, momentum=0.9)
    p.grad = np.full(3, 2.0)
    opt.step()
    assert p.data is buf
    np.testing.assert_array_equal(buf, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # no gradient: nothing moves
    np.testing.assert_array_equal(p.data, np.zeros(3))


def test_param_groups_use_their_own_hyperparameters():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad = b.grad = np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 0.0)


def test_float32_parameters_stay_float32():
    p = Parameter(np.ones(4, dtype=np.float32))
    for opt in (SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01), Adam([p]), AdamW([p])):
        p.grad = np.full(4, 0.5, dtype=np.float32)
        opt.step()
        opt.step()
        assert p.data.dtype == np.float32
        assert all(v.dtype == np.float32 for s in opt.state.values() for v in s.values()
                   if isinstance(v, np.ndarray))


@pytest.mark.parametrize("lr", [0.1, np.float64(0.1), np.float32(0.1)])
def test_plain_sgd_updates_small_and_large_parameters_alike(lr):
    """Small products are new arrays, large ones go through a scratch buffer: one rule,
    p - round(g * lr) in p's dtype, whatever the size and however lr is given."""
    from minidist.optim.sgd import SCRATCH_FROM_BYTES

    rng = np.random.default_rng(0)
    sizes = [3, SCRATCH_FROM_BYTES // 4 + 5]  # float32: below and above the threshold
    params = [Parameter(rng.standard_normal(n).astype(np.float32)) for n in sizes]
    before = [p.data.copy() for p in params]
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(np.float32)
    SGD(params, lr=lr).step()
    for p, p0 in zip(params, before):
        expected = p0 - np.multiply(p.grad, lr, out=np.empty_like(p.grad))
        np.testing.assert_array_equal(p.data, expected)
        assert p.data.dtype == np.float32


def test_argument_errors():
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="invalid lr=-1"):
        SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="require grad"):
        SGD([Tensor(np.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        SGD([p, p], lr=0.1)
