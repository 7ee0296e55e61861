"""End to end: models learn the synthetic sets; training is reproducible, resumable
from state dicts, and step for step equal to PyTorch's in float64."""
import numpy as np
import pytest

import minidist.nn as nn
from minidist import Tensor, no_grad
from minidist.data import DataLoader, spirals, synthetic_images
from minidist.optim import SGD, Adam


def accuracy(model, X, y):
    model.eval()
    with no_grad():
        pred = model(Tensor(X)).data.argmax(axis=1)
    model.train()
    return float((pred == y).mean())


def mlp(rng):
    return nn.Sequential(nn.Linear(2, 64, rng=rng), nn.ReLU(), nn.Linear(64, 64, rng=rng), nn.ReLU(),
                         nn.Linear(64, 3, rng=rng))


def cnn(rng):
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, rng=rng), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10, rng=rng))


def train(model, opt, loader, epochs, first_epoch=0):
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(first_epoch, first_epoch + epochs):
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return float(loss.data)


def test_mlp_learns_spirals():
    X, y = spirals(150, n_classes=3, noise=0.2, seed=0)
    model = mlp(np.random.default_rng(0))
    assert accuracy(model, X, y) < 0.6  # not solved before training
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, opt, DataLoader(X, y, batch_size=50, shuffle=True, seed=0), epochs=60)
    assert accuracy(model, X, y) >= 0.95


def test_cnn_with_batchnorm_learns_synthetic_images():
    X, y = synthetic_images(1024, size=16, seed=0)
    model = cnn(np.random.default_rng(0))
    assert accuracy(model, X, y) < 0.3
    opt = Adam(model.parameters(), lr=0.01)
    train(model, opt, DataLoader(X, y, batch_size=64, shuffle=True, seed=0), epochs=6)
    assert accuracy(model, X, y) >= 0.90  # eval mode: the running statistics are used
    X_new, y_new = synthetic_images(500, size=16, seed=1)
    assert accuracy(model, X_new, y_new) >= 0.85  # learned the shapes, not the samples


def _spiral_run(epochs, checkpoint=None):
    X, y = spirals(60, seed=1)
    model = nn.Sequential(nn.Linear(2, 32, rng=np.random.default_rng(3)), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Linear(32, 3, rng=np.random.default_rng(4)))
    opt = Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    loader = DataLoader(X, y, batch_size=32, shuffle=True, seed=5, drop_last=True)
    first = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optim"])
        first = checkpoint["epoch"]
    train(model, opt, loader, epochs, first_epoch=first)
    return model, opt


def test_training_is_reproducible_and_resumable():
    straight, _ = _spiral_run(6)
    again, _ = _spiral_run(6)
    for (k, a), b in zip(straight.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    half, opt = _spiral_run(3)
    resumed, _ = _spiral_run(3, {"model": half.state_dict(), "optim": opt.state_dict(), "epoch": 3})
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert int(resumed.state_dict()["1.num_batches_tracked"]) == 6 * (180 // 32)


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_cnn_training_steps_match_torch(torch, opt_name):
    """Model, loss and optimizer together: five float64 steps equal PyTorch's."""
    kwargs = dict(lr=0.05, momentum=0.9, weight_decay=1e-3) if opt_name == "SGD" else dict(lr=0.01)
    ours = cnn(np.random.default_rng(0)).to(np.float64)
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10)).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    opt = {"SGD": SGD, "Adam": Adam}[opt_name](ours.parameters(), **kwargs)
    topt = getattr(torch.optim, opt_name)(theirs.parameters(), **kwargs)
    X, y = synthetic_images(80, size=16, seed=2)
    X = X.astype(np.float64)
    for x, t in DataLoader(X, y, batch_size=16, shuffle=True, seed=1):
        loss = nn.CrossEntropyLoss()(ours(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x.data)), torch.from_numpy(t))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        np.testing.assert_allclose(float(loss.data), tloss.item(), rtol=1e-9)
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-7, atol=1e-9, err_msg=k)
