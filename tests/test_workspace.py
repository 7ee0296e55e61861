"""Buffer reuse on the hot path (minidist.autograd.workspace): results bitwise identical to
the same computation without reuse, and a second CNN train step allocates no new large
arrays (tracemalloc)."""
import tracemalloc
import weakref

import numpy as np
import pytest

import minidist
from minidist import nn
from minidist.autograd import workspace
from minidist.nn import functional as F
from minidist.optim import SGD, Adam, AdamW
from minidist.parallel.flat import FlatLayout

LARGE = 64 << 10  # bytes: "a large array"
OPTIMIZERS = {
    "sgd-momentum-wd": lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "sgd-nesterov-maximize": lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, maximize=True),
    "sgd-plain": lambda p: SGD(p, lr=0.1),
    "adam-amsgrad-wd": lambda p: Adam(p, lr=1e-2, weight_decay=1e-3, amsgrad=True),
    "adamw": lambda p: AdamW(p, lr=1e-2),
}


def small_cnn(rng):
    """conv-BN-ReLU-pool twice (the second pool overlapping and padded), then Linear."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, rng=rng), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(16 * 7 * 7, 10, rng=rng))


def train(make_opt, dtype, steps=3, batch=6):
    """Parameters and gradients after each of `steps` CNN steps."""
    rng = np.random.default_rng(0)
    model = small_cnn(rng).to(dtype)
    opt = make_opt(model.parameters())
    history = []
    for _ in range(steps):
        x = minidist.Tensor(rng.standard_normal((batch, 1, 28, 28)).astype(dtype))
        loss = F.cross_entropy(model(x), rng.integers(0, 10, batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history += [p.grad.copy() for p in model.parameters()] + [p.data.copy() for p in model.parameters()]
    return history


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_is_bitwise_identical_without_reuse(name, dtype):
    reused = train(OPTIMIZERS[name], dtype)
    with workspace.fresh_arrays():
        fresh = train(OPTIMIZERS[name], dtype)
    for a, b in zip(reused, fresh, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_second_cnn_step_allocates_no_new_large_arrays():
    rng = np.random.default_rng(0)
    model = small_cnn(rng)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = minidist.Tensor(rng.standard_normal((32, 1, 28, 28)).astype(np.float32))
    y = rng.integers(0, 10, 32)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def large_buffers():  # (key, id) of each scratch buffer of 64 KiB or more
        return {(k, id(workspace.scratch(*k))) for k in workspace.keys()
                if np.dtype(k[2]).itemsize * np.prod(k[1]) >= LARGE}

    workspace.clear()
    tracemalloc.start(5)
    try:
        step()
        after_first, buffers_first = tracemalloc.take_snapshot(), large_buffers()
        step()
        after_second = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert buffers_first and large_buffers() == buffers_first  # step 2 used step 1's buffers
    grown = [s for s in after_second.compare_to(after_first, "traceback") if s.size_diff >= LARGE]
    assert not grown, "\n".join(str(s) for s in grown)


def test_recycled_hands_an_array_out_again_only_once_nothing_references_it():
    workspace.clear()
    first = workspace.recycled((3, 4), np.float32)
    view = first.reshape(12)[2:]
    second = workspace.recycled((3, 4), np.float32)
    assert second is not first  # `first` and a view of it are still held
    del first
    assert workspace.recycled((3, 4), np.float32) is not view.base  # the view alone keeps it
    saved = minidist.Tensor(view.base)  # as an op's output or a saved array is held
    del view, second
    again = workspace.recycled((3, 4), np.float32)
    assert again is not saved.data and workspace.recycled((3, 4), np.float64).dtype == np.float64
    del saved, again
    released = weakref.ref(workspace.recycled((3, 4), np.float32))  # let go of at once
    assert workspace.recycled((3, 4), np.float32) is released()
    with workspace.fresh_arrays():
        unkept = weakref.ref(workspace.recycled((3, 4), np.float32))
        assert unkept() is None
    held = [workspace.recycled((5,), np.int8) for _ in range(workspace.MAX_PER_SHAPE + 3)]
    assert len({id(a) for a in held}) == len(held)  # all in use: new arrays, the pool capped
    assert workspace.nbytes() >= workspace.MAX_PER_SHAPE * 5
    workspace.clear()
    assert workspace.nbytes() == 0


def test_recycled_never_hands_out_an_array_its_last_holder_reshaped_or_froze():
    workspace.clear()
    frozen = workspace.recycled((6, 4), np.float32)
    frozen.flags.writeable = False
    reshaped = workspace.recycled((6, 4), np.float32)
    reshaped.shape = (4, 6)
    del frozen, reshaped
    again = [workspace.recycled((6, 4), np.float32) for _ in range(2)]
    assert all(a.shape == (6, 4) and a.flags.writeable for a in again)
    np.maximum(np.ones((6, 4), np.float32), 0, out=again[0])  # an op writing its output
    assert workspace.nbytes() == sum(a.nbytes for a in again)  # the two altered ones let go
    workspace.clear()


def test_workspace_memory_stays_bounded_over_many_batch_sizes(monkeypatch):
    """An evaluation loop or a ragged last batch brings new shapes: the least recently
    used ones are dropped beyond MAX_BYTES (scratch and recycled, each)."""
    monkeypatch.setattr(workspace, "MAX_BYTES", 4 << 20)
    workspace.clear()
    rng = np.random.default_rng(0)
    model = small_cnn(rng)
    for batch in range(40, 30, -1):
        x = minidist.Tensor(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32))
        F.cross_entropy(model(x), rng.integers(0, 10, batch)).backward()
        assert workspace.nbytes() <= 2 * (4 << 20) + (2 << 20)  # each kind's newest may exceed it alone
    held = workspace._buffers
    assert held.nbytes["pools"] == sum(a.nbytes for pool in held.pools.values() for a in pool)
    assert held.nbytes["arrays"] == sum(a.nbytes for a in held.arrays.values())
    workspace.clear()


def test_outputs_held_across_steps_are_never_overwritten():
    """A user who keeps last step's output, an activation and a gradient sees them
    unchanged after more steps that use arrays of the same shapes."""
    rng = np.random.default_rng(0)
    model = small_cnn(rng)
    opt = SGD(model.parameters(), lr=0.1)
    x = minidist.Tensor(rng.standard_normal((32, 1, 28, 28)).astype(np.float32))
    y = rng.integers(0, 10, 32)
    activation, grads, kept = [], [], None
    for step in range(3):
        activation.append(model[:3](x))  # conv, batch norm, ReLU: recycled outputs
        activation[-1].register_hook(grads.append)
        out = model[3:](activation[-1])
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            kept = [out, out.data.copy(), activation[0].data, activation[0].data.copy(), grads[0], grads[0].copy()]
    assert np.array_equal(kept[0].data, kept[1]) and np.array_equal(kept[2], kept[3])
    assert np.array_equal(kept[4], kept[5])
    assert len({id(a.data) for a in activation}) == 3  # each step's own array, none shared


def test_padded_1x1_conv_keeps_its_columns_out_of_scratch():
    """A 1x1 kernel makes im2col a view of the padded input, which is a scratch buffer: the
    saved columns must be a copy, or a second conv of the same shape would overwrite them."""
    rng = np.random.default_rng(3)
    w = minidist.Tensor(rng.standard_normal((2, 3, 1, 1)), requires_grad=True)
    x1, x2 = (minidist.Tensor(rng.standard_normal((2, 3, 4, 4))) for _ in range(2))
    out = F.conv2d(x1, w, padding=1)
    F.conv2d(x2, w, padding=1)  # pads into the same scratch buffer
    out.sum().backward()
    expected = np.pad(x1.data, ((0, 0), (0, 0), (1, 1), (1, 1))).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(w.grad.reshape(2, 3), np.tile(expected, (2, 1)), rtol=1e-12)


def test_unpack_grads_writes_into_the_existing_gradient():
    params = [nn.Parameter(np.zeros((2, 3))), nn.Parameter(np.zeros(4)), nn.Parameter(np.zeros(2))]
    params[0].grad, params[1].grad = np.ones((2, 3)), np.ones(5)  # the second does not fit
    kept = params[0].grad
    layout = FlatLayout(params, np.float64)
    layout.unpack_grads(np.arange(12.0))
    assert params[0].grad is kept and np.array_equal(kept, np.arange(6.0).reshape(2, 3))
    assert np.array_equal(params[1].grad, np.arange(6.0, 10.0))
    assert np.array_equal(params[2].grad, [10.0, 11.0])


def test_scratch_reuses_per_key_and_stays_bounded():
    workspace.clear()
    a = workspace.scratch("t", (3, 2), np.float32)
    assert workspace.scratch("t", (3, 2), np.float32) is a
    assert workspace.scratch("t", (3, 2), np.float64) is not a
    with workspace.fresh_arrays():
        assert workspace.scratch("t", (3, 2), np.float32) is not a
    for i in range(workspace.MAX_BUFFERS + 5):
        workspace.scratch("many", (i + 1,), np.uint8)
    assert len(workspace.keys()) == workspace.MAX_BUFFERS
    workspace.clear()
    assert workspace.nbytes() == 0


def test_kept_zeros_are_read_only_reused_and_not_a_scratch_buffer():
    workspace.clear()
    z = workspace.zeros((4, 3), np.float32)
    assert not z.any() and z.dtype == np.float32 and not z.flags.writeable
    with pytest.raises(ValueError):
        z += 1  # nobody can dirty it: read-only
    assert workspace.zeros((4, 3), np.float32) is z
    assert workspace.scratch("zeros", (4, 3), np.float32) is not z  # no name reaches it
    with workspace.fresh_arrays():
        fresh = workspace.zeros((4, 3), np.float32)
        assert fresh is not z and not fresh.any()
    workspace.clear()


@pytest.mark.parametrize("name", ["sgd-plain", "sgd-momentum-wd"])
def test_sgd_parameters_of_several_sizes_share_one_update_buffer_bitwise(name):
    """Two weights above SCRATCH_FROM_BYTES, of different shapes, take their lr * g in views
    of one "sgd.update" buffer: the same trajectory as with fresh arrays."""
    def run():
        rng = np.random.default_rng(1)
        model = nn.Sequential(nn.Linear(120, 100, rng=rng), nn.ReLU(), nn.Linear(100, 90, rng=rng)).to(np.float64)
        opt = OPTIMIZERS[name](model.parameters())
        for _ in range(3):
            loss = F.cross_entropy(model(minidist.Tensor(rng.standard_normal((40, 120)))), rng.integers(0, 90, 40))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.data.copy() for p in model.parameters()]

    workspace.clear()
    reused = run()
    assert [k for k in workspace.keys() if k[0] == "sgd.update"] == [("sgd.update", (12000,), np.dtype(np.float64))]
    with workspace.fresh_arrays():
        fresh = run()
    for a, b in zip(reused, fresh, strict=True):
        assert np.array_equal(a, b)


def test_sgd_update_buffers_are_per_dtype_and_empty_groups_are_accepted():
    big = minidist.Tensor(np.zeros((256, 256), np.float32), requires_grad=True)
    small = minidist.Tensor(np.zeros(10_000, np.float64), requires_grad=True)
    opt = SGD([{"params": []}, {"params": [big, small]}], lr=0.1)  # an empty group, as PyTorch allows
    big.grad, small.grad = np.ones((256, 256), np.float32), np.ones(10_000)
    workspace.clear()
    opt.step()
    assert np.all(big.data == np.float32(-0.1)) and np.all(small.data == -0.1)
    assert sorted((k[1], k[2].name) for k in workspace.keys() if k[0] == "sgd.update") == [
        ((10_000,), "float64"), ((65_536,), "float32")]  # not 65,536 float64s for the small one
    workspace.clear()
