"""nn.Module mechanics, layer shapes and errors, and float64 gradient checks of every
layer with respect to its input and its parameters."""
import copy
import subprocess
import sys

import numpy as np
import pytest

import minidist.nn as nn
from minidist import Tensor
from minidist.autograd.gradcheck import gradcheck
from minidist.optim import SGD


def small_cnn(rng=None):
    rng = rng or np.random.default_rng(0)
    features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.MaxPool2d(2))
    return nn.Sequential(features, nn.Flatten(), nn.Linear(4 * 4 * 4, 10, rng=rng))


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(3, 4, rng=np.random.default_rng(1))
        self.norm = nn.BatchNorm1d(4, momentum=None)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(4, 2, bias=False))
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.register_buffer("calls", Tensor(np.zeros(1)))
        self.register_buffer("scratch", Tensor(np.zeros(2)), persistent=False)
        self.note = "plain attribute"

    def forward(self, x):
        return self.head(self.norm(self.trunk(x))) * self.scale


# ---- registration and traversal ---------------------------------------------------------------
def test_names_follow_pytorch():
    m = TwoHeads()
    assert [n for n, _ in m.named_parameters()] == [
        "scale", "trunk.weight", "trunk.bias", "norm.weight", "norm.bias", "head.1.weight"]
    assert [n for n, _ in m.named_buffers()] == [
        "calls", "scratch", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked"]
    assert list(m.state_dict()) == [
        "scale", "calls", "trunk.weight", "trunk.bias", "norm.weight", "norm.bias",
        "norm.running_mean", "norm.running_var", "norm.num_batches_tracked", "head.1.weight"]
    assert [n for n, _ in m.named_children()] == ["trunk", "norm", "head"]
    assert [type(c).__name__ for c in m.children()] == ["Linear", "BatchNorm1d", "Sequential"]
    assert [n for n, _ in m.named_modules()] == ["", "trunk", "norm", "head", "head.0", "head.1"]
    assert len(list(m.modules())) == 6 and m.note == "plain attribute"
    assert all(isinstance(p, nn.Parameter) and isinstance(p, Tensor) and p.requires_grad
               for p in m.parameters())
    assert [n for n, _ in small_cnn().named_buffers()] == [
        "0.1.running_mean", "0.1.running_var", "0.1.num_batches_tracked"]


def test_shared_parameter_listed_once_and_reassignment():
    a = nn.Linear(2, 2)
    seq = nn.Sequential(a, nn.ReLU(), a)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    m = TwoHeads()
    m.trunk = nn.Linear(3, 4, bias=False)  # replacing a child re-registers it
    assert "trunk.bias" not in dict(m.named_parameters())
    m.scale = None
    assert "scale" not in m.state_dict()
    with pytest.raises(TypeError, match="wrap it in nn.Parameter"):
        m.scale = np.ones(1)
    with pytest.raises(TypeError, match="expected a Tensor or None"):
        m.calls = np.zeros(1)
    del m.norm
    assert "norm" not in dict(m.named_children())


def test_setattr_before_init_explains():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(1))

    with pytest.raises(AttributeError, match="call super\\(\\).__init__\\(\\) first"):
        Bad()


def test_train_eval_and_zero_grad():
    m = small_cnn()
    assert all(x.training for x in m.modules())
    assert m.eval() is m and not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    out = m(Tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)))
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_to_float64_in_place_keeps_parameter_objects():
    m = small_cnn()
    params = list(m.parameters())
    opt = SGD(m.parameters(), lr=0.1)
    before = [p.data.copy() for p in params]
    assert m.to(np.float64) is m
    assert all(a is b for a, b in zip(params, m.parameters()))
    assert all(p.dtype == np.float64 for p in m.parameters())
    np.testing.assert_array_equal(params[0].data, before[0].astype(np.float64))
    bn = m[0][1]
    assert bn.running_mean.dtype == np.float64 and bn.running_var.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64  # integer buffers are not cast
    out = m(Tensor(np.ones((2, 1, 8, 8))))
    assert out.dtype == np.float64
    out.sum().backward()
    opt.step()  # the optimizer built before the cast updates the same (now float64) params
    assert not np.array_equal(params[-1].data, before[-1])
    with pytest.raises(TypeError, match="floating dtypes"):
        m.to(np.int32)


def test_state_dict_copies_and_types():
    m = TwoHeads()
    sd = m.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    nbt = sd["norm.num_batches_tracked"]
    assert nbt.dtype == np.int64 and nbt.shape == () and nbt == 0
    assert "scratch" not in sd  # non-persistent
    sd["trunk.weight"][...] = 7.0
    assert not np.any(m.trunk.weight.data == 7.0)


def test_load_state_dict_round_trip_and_in_place():
    src, dst = TwoHeads(), TwoHeads()
    src.train()(Tensor(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)))
    src.trunk.weight.data += 1.0
    weight = dst.trunk.weight
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert dst.trunk.weight is weight  # copied into the existing Parameter
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[k], v)
    assert dst.norm.num_batches_tracked.data == 1


def test_load_state_dict_lists_every_problem():
    m = TwoHeads()
    sd = m.state_dict()
    del sd["trunk.bias"], sd["norm.running_var"]
    sd["extra.weight"] = np.zeros(3)
    sd["head.1.weight"] = np.zeros((2, 5))
    with pytest.raises(RuntimeError) as err:
        m.load_state_dict(sd)
    msg = str(err.value)
    assert "missing keys: 'trunk.bias', 'norm.running_var'" in msg
    assert "unexpected keys: 'extra.weight'" in msg
    assert "size mismatch for 'head.1.weight': the state_dict has shape (2, 5), this model has shape (2, 4)" in msg
    # strict=False reports instead of raising, but a shape mismatch is still an error
    del sd["head.1.weight"]
    result = m.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["trunk.bias", "norm.running_var", "head.1.weight"]
    assert result.unexpected_keys == ["extra.weight"]
    sd["head.1.weight"] = np.zeros((3, 4))
    with pytest.raises(RuntimeError, match="size mismatch for 'head.1.weight'"):
        m.load_state_dict(sd, strict=False)


def test_repr_and_deepcopy():
    m = small_cnn()
    text = repr(m)
    assert "(0): Sequential(" in text and "Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))" in text
    assert "Linear(in_features=64, out_features=10, bias=True)" in text
    clone = copy.deepcopy(m)
    assert clone[2].weight is not m[2].weight
    np.testing.assert_array_equal(clone[2].weight.data, m[2].weight.data)
    assert list(clone.state_dict()) == list(m.state_dict())


def test_default_init_is_deterministic_and_rng_is_used():
    import minidist

    minidist.manual_seed(0)
    first = nn.Linear(5, 3).weight.data
    minidist.manual_seed(0)
    np.testing.assert_array_equal(nn.Linear(5, 3).weight.data, first)
    rng = np.random.default_rng(3)
    a, b = nn.Linear(5, 3, rng=rng), nn.Linear(5, 3, rng=rng)
    assert not np.array_equal(a.weight.data, b.weight.data)
    assert nn.Linear(5, 3, dtype=np.float64).weight.dtype == np.float64
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        nn.Linear(2, 2, rng=3)


def test_sync_batch_norm_is_lazy():
    code = ("import sys, minidist.nn as nn; "
            "assert not [m for m in sys.modules if m.startswith('minidist.parallel')]; "
            "cls = nn.SyncBatchNorm; import minidist.nn.syncbn as s; "
            "assert cls is s.SyncBatchNorm; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        nn.Nope


# ---- shapes and errors ------------------------------------------------------------------------
def test_output_shapes():
    x = Tensor(np.zeros((2, 3, 9, 7), dtype=np.float32))
    assert nn.Conv2d(3, 5, (3, 2), stride=2, padding=1)(x).shape == (2, 5, 5, 4)
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 4, 3)
    assert nn.MaxPool2d(3, stride=1, padding=1)(x).shape == (2, 3, 9, 7)
    assert nn.Flatten()(x).shape == (2, 189)
    assert nn.Flatten(0, 1)(x).shape == (6, 9, 7)
    assert nn.Linear(7, 4)(x).shape == (2, 3, 9, 4)
    assert nn.LayerNorm((9, 7))(x).shape == x.shape
    assert nn.BatchNorm1d(3)(Tensor(np.ones((4, 3, 5)))).shape == (4, 3, 5)


@pytest.mark.parametrize("layer, shape, message", [
    (nn.BatchNorm1d(3), (2, 3, 4, 4), r"BatchNorm1d expected 2D or 3D input \(got 4D input\)"),
    (nn.BatchNorm2d(3), (2, 3), r"BatchNorm2d expected 4D input \(got 2D input\)"),
    (nn.BatchNorm2d(3), (2, 4, 2, 2), r"num_features=3 channels at dim 1 \(got input of shape \(2, 4, 2, 2\)\)"),
    (nn.Linear(4, 2), (3, 5), r"last dimension in_features=4 \(got input of shape \(3, 5\)\)"),
    (nn.Conv2d(3, 2, 3), (3, 5, 5), r"Conv2d expected 4D input \(N, C, H, W\) \(got 3D input"),
    (nn.Conv2d(3, 2, 3), (1, 2, 5, 5), r"in_channels=3 channels at dim 1 \(got input of shape \(1, 2, 5, 5\)\)"),
    (nn.Conv2d(1, 2, 5), (1, 1, 3, 3), r"smaller than the kernel"),
    (nn.MaxPool2d(2), (4, 4), r"MaxPool2d expected 4D input"),
    (nn.LayerNorm(4), (2, 5), r"normalized_shape=\(4,\) \(got input of shape \(2, 5\)\)"),
    (nn.Flatten(2), (3, 4), r"Flatten\(start_dim=2, end_dim=-1\) does not fit a 2D input"),
])
def test_wrong_input_shapes_say_what_was_expected(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(Tensor(np.zeros(shape, dtype=np.float32)))


def test_constructor_errors():
    with pytest.raises(ValueError, match="momentum must be in"):
        nn.BatchNorm1d(3, momentum=2.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        nn.Conv2d(1, 1, (1, 2, 3))


def test_dropout_uses_its_generator_and_eval_is_identity():
    x = Tensor(np.ones((50, 40), dtype=np.float32))
    a = nn.Dropout(0.3, rng=np.random.default_rng(5))
    b = nn.Dropout(0.3, rng=np.random.default_rng(5))
    ya, yb = a(x).data, b(x).data
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(ya, a(x).data)  # the generator advanced
    assert set(np.unique(ya)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((ya == 0).mean() - 0.3) < 0.05
    a.eval()
    np.testing.assert_array_equal(a(x).data, x.data)


# ---- gradient checks (float64) ----------------------------------------------------------------
def _x(shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


LAYERS = {
    "linear": (lambda: nn.Linear(4, 3), (5, 4)),
    "linear_3d_nobias": (lambda: nn.Linear(4, 3, bias=False), (2, 3, 4)),
    "conv": (lambda: nn.Conv2d(2, 3, 3), (2, 2, 5, 5)),
    "conv_stride_padding": (lambda: nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2)), (2, 2, 5, 4)),
    "batchnorm1d_2d": (lambda: nn.BatchNorm1d(3), (6, 3)),
    "batchnorm1d_3d": (lambda: nn.BatchNorm1d(3), (4, 3, 2)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), (2, 3, 3, 2)),
    "batchnorm2d_no_affine": (lambda: nn.BatchNorm2d(3, affine=False), (2, 3, 2, 2)),
    "batchnorm2d_untracked": (lambda: nn.BatchNorm2d(3, track_running_stats=False), (2, 3, 2, 2)),
    "layernorm": (lambda: nn.LayerNorm(5), (3, 5)),
    "layernorm_2d_shape": (lambda: nn.LayerNorm((2, 3)), (2, 2, 3)),
    "maxpool": (lambda: nn.MaxPool2d(2, stride=1), (2, 2, 4, 4)),
    "relu": (lambda: nn.ReLU(), (4, 5)),
    "sigmoid": (lambda: nn.Sigmoid(), (4, 5)),
    "tanh": (lambda: nn.Tanh(), (4, 5)),
    "flatten": (lambda: nn.Flatten(), (2, 3, 2)),
    "dropout": (lambda: _ReseededDropout(0.4), (4, 6)),
}


class _ReseededDropout(nn.Dropout):
    """The same mask every call, so finite differences see a deterministic function."""

    def forward(self, x):
        self.rng = np.random.default_rng(11)
        return super().forward(x)


@pytest.mark.parametrize("name", LAYERS)
def test_layer_gradcheck(name):
    make, shape = LAYERS[name]
    layer = make().to(np.float64)
    if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
        for p in layer.parameters():  # away from the identity init, so weight matters
            p.data[...] = np.random.default_rng(2).uniform(0.5, 1.5, p.shape)
    x = _x(shape)
    if name in ("maxpool", "relu"):  # keep inputs off the kinks
        x.data[...] = np.random.default_rng(0).permutation(x.size).reshape(shape) * 0.1 - x.size * 0.05 + 0.025
    assert layer.training
    assert gradcheck(lambda x, *params: layer(x), [x, *layer.parameters()])


def test_batchnorm_eval_gradcheck():
    layer = nn.BatchNorm2d(3).to(np.float64)
    layer(Tensor(np.random.default_rng(4).standard_normal((4, 3, 2, 2)) * 2 + 1))  # move the running stats
    layer.eval()
    assert gradcheck(lambda x, *params: layer(x), [_x((2, 3, 2, 2)), *layer.parameters()])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_gradcheck(reduction):
    target = np.array([0, 2, 1, 2])
    ce = nn.CrossEntropyLoss(reduction=reduction)
    assert gradcheck(lambda x: ce(x, target), [_x((4, 3))])
    mse = nn.MSELoss(reduction=reduction)
    y = np.random.default_rng(9).standard_normal((4, 3))
    assert gradcheck(lambda x: mse(x, y), [_x((4, 3))])


def test_gradcheck_of_a_whole_model():
    m = small_cnn(np.random.default_rng(2)).to(np.float64)
    target = np.array([3, 1])
    loss = nn.CrossEntropyLoss()
    x = _x((2, 1, 8, 8))
    x.data += np.random.default_rng(5).permutation(128).reshape(x.shape) * 1e-2  # distinct pooling maxima
    assert gradcheck(lambda x, *params: loss(m(x), target), [x, *m.parameters()])


def test_layers_without_a_generator_differ_and_reseed_reproducibly():
    import minidist

    minidist.manual_seed(3)
    a, b = nn.Linear(8, 8), nn.Linear(8, 8)
    assert not np.array_equal(a.weight.data, b.weight.data)
    minidist.manual_seed(3)
    assert np.array_equal(nn.Linear(8, 8).weight.data, a.weight.data)


def test_duplicate_parameters_are_named_by_entry():
    from minidist.optim import SGD

    lin = nn.Linear(2, 2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"parameter at entry 2 \(shape \(2, 2\)\) appears more than once: it is already in entry 0"):
        SGD([lin.weight, lin.bias, lin.weight], lr=0.1)


def test_batchnorm_shape_errors_name_the_shape():
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\); the input's shape is \(2, 3, 4, 4\)"):
        nn.BatchNorm1d(3)(Tensor(np.zeros((2, 3, 4, 4), np.float32)))
    with pytest.raises(ValueError, match=r"expected 4D input \(got 2D input\); the input's shape is \(2, 3\)"):
        nn.BatchNorm2d(3)(Tensor(np.zeros((2, 3), np.float32)))
