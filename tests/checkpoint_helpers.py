"""A small float64 training job shared by the checkpoint tests (in-process and under
mpiexec): a model with BatchNorm and a Dropout drawing from the process-wide generator,
and batches that depend only on the step number."""
from __future__ import annotations

import numpy as np

import minidist
from minidist import Tensor, nn
from minidist.nn import functional as F
from minidist.optim import SGD, Adam

GLOBAL_BATCH = 8


def build(optimizer: str = "sgd", seed: int = 0):
    minidist.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.3),
                        nn.Linear(6, 4)).to(np.float64)
    return net


def make_optimizer(params, name: str = "sgd"):
    if name == "adam":
        return Adam(params, lr=0.01, weight_decay=0.01)
    return SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def global_batch(step: int):
    rng = np.random.default_rng(1000 + step)
    return rng.standard_normal((GLOBAL_BATCH, 3)), rng.integers(0, 4, GLOBAL_BATCH)


def train(model, opt, first: int, last: int, shard=None) -> None:
    """Steps first..last-1; `shard(x, y)` picks this rank's rows (None: all)."""
    for step in range(first, last):
        x, y = global_batch(step)
        if shard is not None:
            x, y = shard(x, y)
        loss = F.cross_entropy(model(Tensor(x)), y)
        model.zero_grad()
        loss.backward()
        if hasattr(model, "step"):
            model.step(opt)
        else:
            opt.step()


def state_bytes(module, opt) -> bytes:
    """Every parameter, buffer and optimizer-state array, as raw bytes."""
    parts = [v.tobytes() for v in module.state_dict().values()]
    for entry in opt.state_dict()["state"].values():
        parts += [v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode() for v in entry.values()]
    return b"".join(parts)
