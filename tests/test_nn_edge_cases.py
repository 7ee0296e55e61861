"""Layers, losses and optimizers at their edges (issue 9, items 8 and 9): errors raised
before any state changes, bad hyper-parameters named, and empty batches, NaN and -inf
handled as PyTorch (float64) handles them."""
import numpy as np
import pytest

import minidist
from minidist import Tensor, nn
from minidist.nn import functional as F
from minidist.optim import SGD, Adam, AdamW

from functional_helpers import check_grads, close, to_torch

NAN, INF = float("nan"), float("inf")


# ---- item 8: no state change before an error ------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1)])
def test_batchnorm_batch_of_one_raises_before_counting(shape):
    bn = nn.BatchNorm1d(3).to(np.float64)
    before = bn.state_dict()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(Tensor(np.ones(shape)))
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: Adam(ps, lr=0.1), lambda ps: AdamW(ps, lr=0.1)])
def test_step_with_a_wrong_shape_grad_names_the_parameter_and_changes_nothing(make):
    params = [nn.Parameter(np.ones((2, 3))), nn.Parameter(np.ones(4))]
    opt = make(params)
    params[0].grad, params[1].grad = np.ones((2, 3)), np.ones(4)
    opt.step()  # state exists now: it must survive the failing step unchanged
    saved, values = opt.state_dict(), [p.data.copy() for p in params]
    params[1].grad = np.ones(5)
    with pytest.raises(ValueError, match=r"parameter 1 .*shape \(4,\) but its \.grad has shape \(5,\)"):
        opt.step()
    after = opt.state_dict()
    for i, p in enumerate(params):
        np.testing.assert_array_equal(p.data, values[i])
        for key, v in saved["state"][i].items():
            np.testing.assert_array_equal(after["state"][i][key], v)


BAD_VALUES = [(NAN, ValueError), (INF, ValueError), (-0.5, ValueError), ("0.1", TypeError),
              (None, TypeError), (True, TypeError)]


@pytest.mark.parametrize("value,error", BAD_VALUES)
@pytest.mark.parametrize("make,option", [
    (lambda p, v: SGD(p, lr=v), "lr"), (lambda p, v: SGD(p, lr=0.1, momentum=v), "momentum"),
    (lambda p, v: SGD(p, lr=0.1, weight_decay=v), "weight_decay"),
    (lambda p, v: Adam(p, lr=v), "lr"), (lambda p, v: Adam(p, eps=v), "eps"),
    (lambda p, v: AdamW(p, weight_decay=v), "weight_decay"),
    (lambda p, v: Adam(p, betas=(v, 0.9)), r"betas\[0\]"),
    (lambda p, v: AdamW(p, betas=(0.9, v)), r"betas\[1\]")])
def test_optimizers_name_a_bad_option_and_its_value(make, option, value, error):
    with pytest.raises(error, match=rf"{option}={value!r}".replace("(", r"\(").replace(".", r"\.")):
        make([nn.Parameter(np.ones(2))], value)


def test_param_group_and_loaded_hyperparameters_are_checked_too():
    p, q = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="lr=nan"):
        SGD([{"params": [p]}, {"params": [q], "lr": NAN}], lr=0.1)
    opt = Adam([p])
    bad = opt.state_dict()
    bad["param_groups"][0]["betas"] = (0.9, 1.0)
    with pytest.raises(ValueError, match=r"betas\[1\]=1\.0"):
        opt.load_state_dict(bad)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


# ---- item 9: empty batches -----------------------------------------------------------------
def _small_cnn():
    minidist.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(12, 5)).to(np.float64)


def _torch_copy(torch, model):
    tnn = torch.nn
    ref = tnn.Sequential(tnn.Conv2d(2, 3, 3, padding=1), tnn.BatchNorm2d(3), tnn.ReLU(), tnn.MaxPool2d(2),
                         tnn.Flatten(), tnn.Linear(12, 5)).double()
    ref.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return ref


@pytest.mark.parametrize("training", [True, False])
def test_cnn_forward_backward_on_an_empty_batch_as_torch(torch, training):
    model, x = _small_cnn().train(training), np.zeros((0, 2, 4, 4))
    ref = _torch_copy(torch, model).train(training)
    xt, xm = to_torch(torch, x), Tensor(x, requires_grad=True)
    out, out_t = model(xm), ref(xt)
    loss = F.cross_entropy(out, np.zeros(0, dtype=np.int64), reduction="sum")
    torch.nn.functional.cross_entropy(out_t, torch.zeros(0, dtype=torch.long), reduction="sum").backward()
    loss.backward()
    assert out.shape == tuple(out_t.shape) and xm.grad.shape == x.shape
    for (name, p), p_t in zip(model.named_parameters(), ref.parameters()):
        close(p.grad, p_t.grad)
    for key, value in ref.state_dict().items():
        close(model.state_dict()[key], value.numpy())


@pytest.mark.parametrize("shape", [(0, 3, 5), (0, 3, 2, 2)])
def test_eval_batchnorm_and_syncbn_pieces_backward_on_an_empty_batch(torch, shape):
    bn = (nn.BatchNorm1d(3) if len(shape) == 3 else nn.BatchNorm2d(3)).to(np.float64).eval()
    x = Tensor(np.zeros(shape), requires_grad=True)
    bn(x).sum().backward()
    np.testing.assert_array_equal(bn.weight.grad, np.zeros(3))
    sums = F.batch_norm_backward_reduce(np.zeros(shape), np.zeros(shape), np.zeros(3), np.ones(3))
    for s in sums:
        np.testing.assert_array_equal(s, np.zeros(3))
    dx = F.batch_norm_backward_elemt(np.zeros(shape), np.zeros(shape), np.zeros(3), np.ones(3), np.ones(3),
                                     sums[0], sums[1], 4)  # a rank with no rows, global count 4
    assert dx.shape == shape


# ---- item 9: dropout, Sequential slices ---------------------------------------------------------
def test_dropout_without_rng_draws_from_the_process_generator():
    x = Tensor(np.ones((20, 30)))
    minidist.manual_seed(1)
    a, b = nn.Dropout(0.5), nn.Dropout(0.5)
    first, second = a(x).data, b(x).data
    assert not np.array_equal(first, second)  # two layers, two masks
    minidist.manual_seed(1)
    np.testing.assert_array_equal(a(x).data, first)  # the seed decides them
    minidist.manual_seed(2)
    assert not np.array_equal(a(x).data, first)


def test_sequential_slice_keeps_child_names(torch):
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4))
    ref = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 4))
    assert list(seq[1:].state_dict()) == list(ref[1:].state_dict()) == ["2.weight", "2.bias"]
    assert [n for n, _ in seq[1:].named_children()] == ["1", "2"]


# ---- item 9: NaN and -inf -----------------------------------------------------------------------
@pytest.mark.parametrize("x,kernel,stride,padding", [
    ([[1.0, NAN, 3.0, 2.0]], (1, 4), 1, 0),
    ([[NAN, NAN, 3.0, 2.0]], (1, 4), 1, 0),
    ([[5.0, NAN, 3.0, NAN]], (1, 2), 1, 0),
    ([[-INF, -INF], [-INF, -INF]], 2, 1, 1),
    ([[-INF, -INF, 1.0], [-INF, -INF, 2.0], [0.0, 0.0, 0.0]], 2, 2, 1),
    ([[-INF, NAN, -INF], [-INF, -INF, 2.0], [0.0, 0.0, 0.0]], 3, 1, 1),
])
def test_max_pool_nan_and_padded_minus_inf_as_torch(torch, x, kernel, stride, padding):
    a = np.array(x)[None, None]
    mine, theirs = Tensor(a, requires_grad=True), to_torch(torch, a)
    out = F.max_pool2d(mine, kernel, stride, padding)
    ref = torch.nn.functional.max_pool2d(theirs, kernel, stride, padding)
    np.testing.assert_array_equal(out.data, ref.detach().numpy())
    g = np.arange(1.0, out.data.size + 1).reshape(out.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_array_equal(mine.grad, theirs.grad.numpy())


def test_relu_gradient_at_nan_is_torchs(torch):
    a = np.array([NAN, 0.0, 1.0, -1.0, -INF, INF])
    mine, theirs = Tensor(a, requires_grad=True), to_torch(torch, a)
    F.relu(mine).sum().backward()
    torch.relu(theirs).sum().backward()
    np.testing.assert_array_equal(mine.grad, theirs.grad.numpy())
    check_grads(F.relu, np.array([0.3, -0.7, 1.2]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_losses_with_every_target_ignored_as_torch(torch, reduction, loss):
    logits = np.random.default_rng(0).standard_normal((3, 4))
    target = np.full(3, -100)
    mine, theirs = Tensor(logits, requires_grad=True), to_torch(torch, logits)
    out = getattr(F, loss)(mine, target, reduction=reduction)
    ref = getattr(torch.nn.functional, loss)(theirs, torch.tensor(target), reduction=reduction)
    np.testing.assert_array_equal(out.data, ref.detach().numpy())  # nan for "mean", as torch
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_array_equal(mine.grad, np.zeros((3, 4)))
    np.testing.assert_array_equal(mine.grad, theirs.grad.numpy())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_some_targets_ignored_as_torch(torch, reduction):
    logits = np.random.default_rng(1).standard_normal((5, 4))
    target = np.array([2, 1, 3, 1, 0])
    mine, theirs = Tensor(logits, requires_grad=True), to_torch(torch, logits)
    out = F.cross_entropy(mine, target, reduction=reduction, ignore_index=1)
    ref = torch.nn.functional.cross_entropy(theirs, torch.tensor(target), reduction=reduction, ignore_index=1)
    close(out, ref)
    weights = np.arange(1.0, 6.0) if reduction == "none" else 3.0  # an upstream gradient that is not 1
    (out * weights).sum().backward()
    (ref * torch.tensor(weights)).sum().backward()
    close(mine.grad, theirs.grad)
    assert not mine.grad[[1, 3]].any()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_ignores_minus_inf_in_an_ignored_row(torch, reduction):
    logp = np.array([[-INF, 0.0], [0.0, -1.0]])
    target = np.array([0, 1])
    mine, theirs = Tensor(logp, requires_grad=True), to_torch(torch, logp)
    out = F.nll_loss(mine, target, reduction=reduction, ignore_index=0)
    ref = torch.nn.functional.nll_loss(theirs, torch.tensor(target), reduction=reduction, ignore_index=0)
    assert not np.isnan(out.data).any()
    close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    close(mine.grad, theirs.grad)


@pytest.mark.mpi
def test_a_cnn_under_ddp_trains_with_an_empty_shard_and_syncbn_refuses_one_value():
    from mpi_util import run_mpi

    for rank, result in enumerate(run_mpi(2, "empty_shard_cnn.py", timeout=180)):
        for norm in ("none", "batch", "sync"):
            assert result[norm] < 1e-12, f"rank {rank}, norm={norm}: max |param - reference| = {result[norm]}"
        assert "more than 1 value per channel" in result["syncbn_one"]
        assert result["syncbn_state"] == {"weight": [1.0] * 3, "bias": [0.0] * 3, "running_mean": [0.0] * 3,
                                          "running_var": [1.0] * 3, "num_batches_tracked": 0}


def test_syncbatchnorm_on_one_rank_raises_before_counting():
    from minidist.comm import Communicator

    bn = nn.SyncBatchNorm(3, Communicator(), dtype=np.float64)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(Tensor(np.ones((1, 3))))
    assert int(bn.num_batches_tracked.data) == 0


def test_max_pool_with_random_nan_minus_inf_and_ties_matches_torch(torch):
    rng = np.random.default_rng(0)
    for _ in range(60):
        kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
        stride = tuple(int(s) for s in rng.integers(1, 4, 2))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        x = rng.integers(-2, 3, (2, 2, *rng.integers(max(kernel), 7, 2))).astype(float)  # many ties
        u = rng.random(x.shape)
        x[u < 0.15], x[(u > 0.15) & (u < 0.4)] = NAN, -INF
        mine, theirs = Tensor(x, requires_grad=True), to_torch(torch, x)
        out = F.max_pool2d(mine, kernel, stride, padding)
        ref = torch.nn.functional.max_pool2d(theirs, kernel, stride, padding)
        np.testing.assert_array_equal(out.data, ref.detach().numpy())
        g = rng.standard_normal(out.shape)
        out.backward(g)
        ref.backward(torch.tensor(g))
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=f"kernel={kernel} stride={stride} padding={padding}")


@pytest.mark.parametrize("shape", [(40, 10), (64, 63), (31, 10), (64, 64)])
def test_cross_entropy_row_max_either_way_as_torch(torch, shape):
    """Many rows of few classes take the class-major row max (loss_ops._row_max), the others
    the row-wise one: both give torch's loss and gradient, -inf and NaN rows included.
    Scores in the thousands overflow exp unless the shift is each row's true maximum."""
    from minidist.nn.loss_ops import _row_max

    logits = np.random.default_rng(2).standard_normal(shape) * 1000
    logits[0, :2], logits[1, 0] = -INF, NAN
    np.testing.assert_array_equal(_row_max(logits), logits.max(axis=1, keepdims=True))
    target = np.arange(shape[0]) % shape[1]
    mine, theirs = Tensor(logits, requires_grad=True), to_torch(torch, logits)
    out = F.cross_entropy(mine, target, reduction="none")
    ref = torch.nn.functional.cross_entropy(theirs, torch.tensor(target), reduction="none")
    close(out, ref)
    out[2:].sum().backward()
    ref[2:].sum().backward()
    close(mine.grad, theirs.grad)
