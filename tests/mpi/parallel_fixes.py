"""Worker: the second review's reproductions, each beside a local reference.

"two_models": two DDP models on one communicator stepped interleaved (forward A, forward
B, backward A, backward B, step A, step B): each instance rings on its own tags.
"eval_between/<strategy>": uneven training shards, and an eval-mode forward with
gradients enabled between steps, which must not count as training samples.
"static_nosync_first": static_graph=True whose first step() follows a no_sync backward
only. "dp_scatter_bad_y": dp scatter_inputs with targets of the wrong length, which must
raise the same error on every rank. "unused_everywhere/<strategy>": a head no rank uses
from the third step on, with momentum and weight decay (ddp, hub and dp, with and without
find_unused_parameters).
Emits, per case, the max |param - reference| (or what was raised).
"""
import numpy as np

import minidist.nn as nn
from minidist import Tensor
from minidist.comm import Communicator
from minidist.nn import functional as F
from minidist.optim import SGD
from minidist.parallel import shard_bounds, train_step, wrap
from mpi_util import emit

F64 = np.float64


def mlp(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(4, 6, rng=rng, dtype=F64), nn.ReLU(),
                         nn.Linear(6, 6, rng=rng, dtype=F64), nn.ReLU(),
                         nn.Linear(6, 3, rng=rng, dtype=F64))


def flat_params(net):
    return np.concatenate([p.data.ravel() for p in net.parameters()])


def param_diff(net, ref) -> float:
    return float(np.abs(flat_params(net) - flat_params(ref)).max())


def local_step(ref, opt, x, y):
    loss = F.cross_entropy(ref(Tensor(x)), y)
    ref.zero_grad()
    loss.backward()
    opt.step()


def two_models(comm, steps=3):
    nets, refs = [mlp(0), mlp(1)], [mlp(0), mlp(1)]
    models = [wrap(net, "ddp", comm, bucket_cap_mb=1e-5) for net in nets]
    opts = [SGD(m.parameters(), lr=0.1, momentum=0.9) for m in models]
    ropts = [SGD(r.parameters(), lr=0.1, momentum=0.9) for r in refs]
    rng = np.random.default_rng(5)
    a, b = shard_bounds(8, comm.size, comm.rank)
    for _ in range(steps):
        x, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
        losses = [F.cross_entropy(m(Tensor(x[a:b])), y[a:b]) for m in models]
        for m in models:
            m.zero_grad()
        for loss in losses:
            loss.backward()
        for m, opt in zip(models, opts):
            m.step(opt)
        for r, ropt in zip(refs, ropts):
            local_step(r, ropt, x, y)
    return {"diffs": [param_diff(n, r) for n, r in zip(nets, refs)],
            "instances": [m.instance for m in models]}


def eval_between(comm, strategy, steps=3):
    sizes = [5, 2, 4, 3][: comm.size]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    a, b, total = starts[comm.rank], starts[comm.rank + 1], starts[-1]
    net, ref = mlp(0), mlp(0)
    model = wrap(net, strategy, comm)
    opt, ropt = SGD(model.parameters(), lr=0.1, momentum=0.9), SGD(ref.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(3)
    diffs = []
    for _ in range(steps):
        x, y = rng.standard_normal((total, 4)), rng.integers(0, 3, total)
        train_step(model, opt, x[a:b], y[a:b])
        local_step(ref, ropt, x, y)
        model.eval()
        model(Tensor(rng.standard_normal((6, 4))))  # validation with gradients enabled
        model.train()
        diffs.append(param_diff(net, ref))
    return diffs


def static_nosync_first(comm, steps=3):
    net, ref = mlp(0), mlp(0)
    model = wrap(net, "ddp", comm, static_graph=True, bucket_cap_mb=1e-6)
    opt, ropt = SGD(model.parameters(), lr=0.1), SGD(ref.parameters(), lr=0.1)
    rng = np.random.default_rng(1)
    a, b = shard_bounds(8, comm.size, comm.rank)
    for it in range(steps):
        x, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
        model.zero_grad()
        if it == 0:
            with model.no_sync():
                F.cross_entropy(model(Tensor(x[a:b])), y[a:b]).backward()
        else:
            F.cross_entropy(model(Tensor(x[a:b])), y[a:b]).backward()
        model.step(opt)
        local_step(ref, ropt, x, y)
    return {"diff": param_diff(net, ref), "graph_length": len(model._graph.order or []),
            "parameters": len(list(net.parameters()))}


def dp_scatter_bad_y(comm):
    model = wrap(mlp(0), "dp", comm, scatter_inputs=True)
    opt = SGD(model.parameters(), lr=0.1)
    try:
        train_step(model, opt, np.ones((10, 4)), np.zeros(11, dtype=np.int64))
    except ValueError as exc:
        return {"raised": True, "message": str(exc)}
    return {"raised": False}


class Headed(nn.Module):
    """body(x) + head(x) while `use_head`; the head is unused (on every rank) otherwise."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.body = nn.Linear(4, 3, rng=rng, dtype=F64)
        self.head = nn.Linear(4, 3, rng=rng, dtype=F64)
        self.use_head = True

    def forward(self, x):
        out = self.body(x)
        return out + self.head(x) if self.use_head else out


def phase_counts(comm) -> dict:
    """{phase: {messages_sent, bytes_sent, ...}} recorded so far."""
    return {phase: {k: int(v) for k, v in t.items() if not k.endswith("seconds")}
            for phase, t in comm.ledger.by_phase().items()}


def counts_since(comm, before: dict) -> dict:
    now = phase_counts(comm)
    return {phase: {k: v - before.get(phase, {}).get(k, 0) for k, v in t.items()}
            for phase, t in now.items()}


def unused_everywhere(comm, strategy="ddp", steps=4, **options):
    before = phase_counts(comm)
    net, ref = Headed(), Headed()
    model = wrap(net, strategy, comm, **options)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    ropt = SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    rng = np.random.default_rng(1)
    a, b = shard_bounds(8, comm.size, comm.rank)
    for it in range(steps):
        x, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
        net.use_head = ref.use_head = it < 2  # no rank uses the head from the third step on
        train_step(model, opt, x[a:b], y[a:b])
        local_step(ref, ropt, x, y)
    counts = counts_since(comm, before)
    return {"diff": param_diff(net, ref), "head_grad_is_none": net.head.weight.grad is None,
            "bitmap_messages": counts.get("unused-bitmap", {}).get("messages_sent", 0),
            "phases": counts}


def main():
    comm = Communicator()
    emit({"two_models": two_models(comm),
          "eval_between": {s: eval_between(comm, s) for s in ("ddp", "hub", "dp")},
          "static_nosync_first": static_nosync_first(comm),
          "unused_everywhere": {s: unused_everywhere(comm, s, find_unused_parameters=True)
                                for s in ("ddp", "hub", "dp")},
          "unused_everywhere_default": {s: unused_everywhere(comm, s) for s in ("ddp", "hub", "dp")},
          "dp_scatter_bad_y": dp_scatter_bad_y(comm)})


main()
