"""Worker: DDP when the ranks do not produce the same gradients (the review's deadlocks).

Models whose head `aux` (registered last, so its parameters fill DDP's first buckets) is
used on some ranks only; one parameter per bucket. "chain": 8 Linear layers; "syncbn": a
SyncBatchNorm in the body, whose blocking all-reduce runs in the middle of backward. Each
is trained two steps with overlap on and off (and with a blocking all-reduce algorithm),
beside a local reference: the same layers (BatchNorm for SyncBatchNorm) on the global
batch, the head added to the rows of the ranks that use it, the loss averaged over the
global batch, which is what DDP's sample-weighted average computes. Then static_graph=True
on the same model must raise on every rank. Emits the max |grad - reference| per step.
"""
import sys

import numpy as np

import minidist.nn as nn
from minidist import Tensor
from minidist.comm import Communicator
from minidist.nn import functional as F
from minidist.optim import SGD
from minidist.parallel import SyncBatchNorm, local_shard, shard_bounds, wrap
from mpi_util import emit

BATCH, WIDTH, OUT, STEPS = 11, 4, 3, 2


class Headed(nn.Module):
    """body -> the first OUT features, plus aux(h) on the rows where `head_rows` is 1."""

    def __init__(self, kind, comm=None):
        super().__init__()
        rng = np.random.default_rng(0)
        if kind == "chain":
            layers = [nn.Linear(WIDTH, WIDTH, rng=rng, dtype=np.float64) for _ in range(8)]
        else:
            norm = (SyncBatchNorm(WIDTH, comm, dtype=np.float64) if comm is not None
                    else nn.BatchNorm1d(WIDTH, dtype=np.float64))
            layers = [nn.Linear(WIDTH, WIDTH, rng=rng, dtype=np.float64), norm, nn.ReLU(),
                      nn.Linear(WIDTH, WIDTH, rng=rng, dtype=np.float64)]
        self.body = nn.Sequential(*layers)
        self.aux = nn.Linear(WIDTH, OUT, rng=rng, dtype=np.float64)  # registered last: bucket 0
        self.head_rows = None  # None: no head; else a (rows, 1) 0/1 mask

    def forward(self, x):
        h = self.body(x)
        out = h[:, :OUT]
        return out if self.head_rows is None else out + self.aux(h) * self.head_rows


def uses_head(pattern, rank):
    return rank == 0 if pattern == "rank0" else rank != 1


def batches():
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((BATCH, WIDTH)), rng.integers(0, OUT, BATCH)) for _ in range(STEPS)]


def grads(net):
    return np.concatenate([p.grad.ravel() if p.grad is not None else np.zeros(p.data.size)
                           for p in net.parameters()])


def reference(kind, pattern, size):
    """Gradients, step by step, of the global-batch loss on one process."""
    net = Headed(kind)
    mask = np.concatenate([np.full((b - a, 1), float(uses_head(pattern, r)))
                           for r, (a, b) in enumerate(shard_bounds(BATCH, size, k) for k in range(size))])
    net.head_rows = mask
    opt = SGD(net.parameters(), lr=0.1)
    out = []
    for x, y in batches():
        loss = F.cross_entropy(net(Tensor(x)), y)
        net.zero_grad()
        loss.backward()
        out.append(grads(net))
        opt.step()
    return out


def run(comm, kind, pattern, **options):
    net = Headed(kind, comm)
    net.head_rows = np.ones((1, 1)) if uses_head(pattern, comm.rank) else None
    model = wrap(net, "ddp", comm, bucket_cap_mb=1e-6, **options)  # one parameter per bucket
    opt = SGD(model.parameters(), lr=0.1)
    diffs = []
    for step, (x, y) in enumerate(batches()):
        xs, ys = local_shard((x, y), comm)
        loss = F.cross_entropy(model(Tensor(xs)), ys)
        model.zero_grad()
        loss.backward()
        model.step(opt)
        diffs.append(float(np.abs(grads(net) - REFERENCE[kind, pattern][step]).max()))
    return {"diffs": diffs, "buckets": len(model.buckets)}


def static_graph_mismatch(comm):
    net = Headed("chain", comm)
    net.head_rows = np.ones((1, 1)) if comm.rank == 0 else None
    model = wrap(net, "ddp", comm, bucket_cap_mb=1e-6, static_graph=True)
    x, y = batches()[0]
    xs, ys = local_shard((x, y), comm)
    loss = F.cross_entropy(model(Tensor(xs)), ys)
    model.zero_grad()
    loss.backward()
    try:
        model.step(SGD(model.parameters(), lr=0.1))
    except RuntimeError as e:
        return {"raised": True, "message": str(e)}
    return {"raised": False}


comm = Communicator()
CASES = {"chain-rank0": ("chain", "rank0", {}),
         "chain-rank0-no-overlap": ("chain", "rank0", {"overlap": False}),
         "chain-not1": ("chain", "not1", {}),
         "syncbn-rank0": ("syncbn", "rank0", {}),
         "syncbn-rank0-no-overlap": ("syncbn", "rank0", {"overlap": False}),
         "syncbn-not1-recursive-doubling": ("syncbn", "not1", {"algorithm": "recursive_doubling"})}
REFERENCE = {(k, p): reference(k, p, comm.size) for k, p, _ in CASES.values()}
only = sys.argv[1].split(",") if len(sys.argv) > 1 else list(CASES)
result = {name: run(comm, *CASES[name][:2], **CASES[name][2]) for name in only}
result["static_graph_mismatch"] = static_graph_mismatch(comm)
emit(result)
