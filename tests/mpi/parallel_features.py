"""Worker: SyncBatchNorm (global statistics, large offsets, eval mode), plain BatchNorm,
no_sync, overlap order, unused parameters, the drift check, the fp16 hook and memory
accounting, all on one launch. Emits one dict per check; tests/test_parallel_features.py
asserts on them."""
import numpy as np

import minidist.nn as nn
from minidist import Tensor
from minidist.comm import Communicator, ring_allreduce
from minidist.nn import functional as F
from minidist.optim import SGD, Adam
from minidist.parallel import (MLP, ReplicaDriftError, SmallCNN, SyncBatchNorm, local_shard,
                               shard_bounds, wrap)
from mpi_util import emit

BATCH, IN, HIDDEN, OUT = 22, 5, 12, 4


def data(steps, batch=BATCH, seed=5):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, IN)) * 2 + 1, rng.integers(0, OUT, batch)) for _ in range(steps)]


def train_step(model, opt, x, y):
    out = model(Tensor(x))
    loss = F.cross_entropy(out, y)
    model.zero_grad()
    loss.backward()
    model.step(opt)
    return out


def flat(tensors):
    return np.concatenate([t.data.ravel() for t in tensors])


def grads(net):
    return np.concatenate([p.grad.ravel() for p in net.parameters()])


def bn_buffers(net):
    return flat([b for name, b in net.named_buffers() if "running" in name])


def batchnorm_vs_local(comm, norm, steps=5):
    """ddp with `norm` ("sync" or "batch") against local BatchNorm on the global batch."""
    batches = data(steps)
    ref = MLP(IN, HIDDEN, OUT, norm="batch", rng=3, dtype=np.float64)
    local = wrap(ref, "local")
    opt_ref = SGD(local.parameters(), lr=0.1, momentum=0.9)
    net = MLP(IN, HIDDEN, OUT, norm=norm, comm=comm, rng=3, dtype=np.float64)
    model = wrap(net, "ddp", comm, bucket_cap_mb=1e-4)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    start, stop = shard_bounds(BATCH, comm.size, comm.rank)
    out = {"output": [], "grads": [], "running": [], "params": [], "ledger": None}
    for step, (x, y) in enumerate(batches):
        comm.ledger.reset()
        ref_out = train_step(local, opt_ref, x, y)
        xs, ys = local_shard((x, y), comm)
        my_out = train_step(model, opt, xs, ys)
        if step == 1:
            out["ledger"] = comm.ledger.by_phase()
        out["output"].append(float(np.abs(my_out.data - ref_out.data[start:stop]).max()))
        out["grads"].append(float(np.abs(grads(net) - grads(ref)).max()))
        out["running"].append(float(np.abs(bn_buffers(net) - bn_buffers(ref)).max()))
        out["params"].append(float(np.abs(flat(net.parameters()) - flat(ref.parameters())).max()))
    out["num_batches_tracked"] = [int(b.data) for n, b in net.named_buffers() if n.endswith("num_batches_tracked")]
    return out


def syncbn_cnn_converted(comm, steps=2):
    """A CNN whose BatchNorm2d layers are converted to SyncBatchNorm, against local BN."""
    rng = np.random.default_rng(11)
    batches = [(rng.standard_normal((9, 1, 8, 8)), rng.integers(0, 10, 9)) for _ in range(steps)]
    ref = SmallCNN(1, 10, 8, channels=(3, 4), norm="batch", rng=2, dtype=np.float64)
    local = wrap(ref, "local")
    opt_ref = SGD(local.parameters(), lr=0.05, momentum=0.9)
    net = SmallCNN(1, 10, 8, channels=(3, 4), norm="batch", rng=2, dtype=np.float64)
    weight_before = net[1].weight
    net = SyncBatchNorm.convert_sync_batchnorm(net, comm)
    model = wrap(net, "ddp", comm)
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    for x, y in batches:
        train_step(local, opt_ref, x, y)
        train_step(model, opt, *local_shard((x, y), comm))
    return {"converted": [type(m).__name__ for m in net.modules() if "Norm" in type(m).__name__],
            "same_parameter_object": net[1].weight is weight_before,
            "params": float(np.abs(flat(net.parameters()) - flat(ref.parameters())).max()),
            "running": float(np.abs(bn_buffers(net) - bn_buffers(ref)).max())}


def no_sync_accumulation(comm, steps=3):
    """Two micro-batches per step (the first under no_sync), each loss halved, against one
    local step on the union of both micro-batches."""
    batches = data(steps, batch=2 * BATCH, seed=9)
    ref = MLP(IN, HIDDEN, OUT, rng=4, dtype=np.float64)
    local = wrap(ref, "local")
    opt_ref = SGD(local.parameters(), lr=0.1, momentum=0.9)
    net = MLP(IN, HIDDEN, OUT, rng=4, dtype=np.float64)
    model = wrap(net, "ddp", comm, bucket_cap_mb=1e-4)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    diffs, messages = [], []
    for x, y in batches:
        train_step(local, opt_ref, x, y)
        comm.ledger.reset()
        model.zero_grad()
        for i, (xm, ym) in enumerate(((x[:BATCH], y[:BATCH]), (x[BATCH:], y[BATCH:]))):
            xs, ys = local_shard((xm, ym), comm)
            if i == 0:
                with model.no_sync():
                    (F.cross_entropy(model(Tensor(xs)), ys) * 0.5).backward()
                messages.append(comm.ledger.totals("grad-allreduce")["messages_sent"])
            else:
                (F.cross_entropy(model(Tensor(xs)), ys) * 0.5).backward()
        model.step(opt)
        messages.append(comm.ledger.totals("grad-allreduce")["messages_sent"])
        diffs.append(float(np.abs(flat(net.parameters()) - flat(ref.parameters())).max()))
    return {"diffs": diffs, "messages": messages, "buckets": len(model.buckets)}


def overlap_events(comm, overlap, static_graph=False):
    """The events of the second of two steps (static_graph's bounded wait starts there)."""
    net = MLP(IN, HIDDEN, OUT, depth=5, rng=1, dtype=np.float64)
    model = wrap(net, "ddp", comm, bucket_cap_mb=1e-6, overlap=overlap, record_events=True,
                 static_graph=static_graph)
    opt = SGD(model.parameters(), lr=0.1)
    for x, y in data(2):
        model.events.clear()
        train_step(model, opt, *local_shard((x, y), comm))
    return {"events": model.events, "buckets": len(model.buckets)}


class Branchy(nn.Module):
    """`used` always contributes; `rank0_only` only on rank 0; `never` never does."""

    def __init__(self, rank):
        super().__init__()
        rng = np.random.default_rng(0)
        self.used = nn.Linear(IN, OUT, rng=rng, dtype=np.float64)
        self.never = nn.Linear(IN, OUT, rng=rng, dtype=np.float64)
        self.rank0_only = nn.Linear(IN, OUT, rng=rng, dtype=np.float64)
        self.rank = rank

    def forward(self, x):
        out = self.used(x)
        return out + self.rank0_only(x) if self.rank == 0 else out


def unused_parameters(comm):
    net = Branchy(comm.rank)
    model = wrap(net, "ddp", comm, bucket_cap_mb=1e-4)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    out = {}
    for x, y in data(2):
        xs, ys = local_shard((x, y), comm)
        loss = F.cross_entropy(model(Tensor(xs)), ys)
        model.zero_grad()
        loss.backward()
        # what rank 0's contribution weighs: its gradient times its share of the samples
        expected = net.rank0_only.weight.grad * len(xs) / BATCH if comm.rank == 0 else None
        model.step(opt)
        out = {"never_grad_max": float(np.abs(net.never.weight.grad).max()),
               "rank0_only_grad": net.rank0_only.weight.grad.ravel().tolist(),
               "rank0_expected": None if expected is None else expected.ravel().tolist(),
               "never_weight_unchanged": bool(np.array_equal(net.never.weight.data,
                                                             Branchy(0).never.weight.data))}
    return out


def drift(comm):
    net = MLP(IN, HIDDEN, OUT, rng=4, dtype=np.float64)
    model = wrap(net, "ddp", comm, check_replicas=True)
    opt = SGD(model.parameters(), lr=0.1)
    checked_ok = 0
    for step, (x, y) in enumerate(data(4)):
        if step == 2 and comm.rank == comm.size - 1:
            net[0].bias.data[0] += 1e-9  # one replica drifts
        try:
            train_step(model, opt, *local_shard((x, y), comm))
            checked_ok += 1
        except ReplicaDriftError as e:  # raised on every rank alike
            return {"raised": True, "step": e.step, "ranks": e.ranks, "checked_ok": checked_ok,
                    "message": str(e)}
    return {"raised": False, "checked_ok": checked_ok}


def fp16_hook(comm):
    x, y = data(1)[0]
    xs, ys = local_shard((x, y), comm)
    result = {}
    for hook in (None, "fp16"):
        net = MLP(IN, HIDDEN, OUT, rng=4, dtype=np.float64)
        model = wrap(net, "ddp", comm, comm_hook=hook, bucket_cap_mb=1e-3, average="ranks")
        opt = SGD(model.parameters(), lr=0.0)
        comm.ledger.reset()
        train_step(model, opt, xs, ys)
        result[str(hook)] = {"grads": grads(net), "ledger": comm.ledger.totals("grad-allreduce"),
                             "bucket_counts": [b.flat.size for b in model.buckets]}
    diff = float(np.abs(result["fp16"]["grads"] - result["None"]["grads"]).max())
    return {"max_diff": diff, "max_grad": float(np.abs(result["None"]["grads"]).max()),
            "ledger": {k: v["ledger"] for k, v in result.items()},
            "bucket_counts": result["fp16"]["bucket_counts"]}


def ddp_vs_blocking_ring(comm):
    """DDP's overlapped bucket rings (RingAllreduce), with and without the fp16 hook, give
    the very bytes of the blocking ring_allreduce of the same scaled buckets (float16 for
    the hook), computed here from an unwrapped copy of the model."""
    x, y = data(1, seed=13)[0]
    xs, ys = local_shard((x, y), comm)
    out = {}
    for hook in (None, "fp16"):
        net = MLP(IN, HIDDEN, OUT, depth=4, rng=6, dtype=np.float64)
        plain = MLP(IN, HIDDEN, OUT, depth=4, rng=6, dtype=np.float64)
        model = wrap(net, "ddp", comm, comm_hook=hook, bucket_cap_mb=1e-6, average="ranks",
                     nonfinite="ignore")  # the buckets alone, without the status tail
        train_step(model, SGD(model.parameters(), lr=0.0), xs, ys)
        F.cross_entropy(plain(Tensor(xs)), ys).backward()
        local, reduced = dict(plain.named_parameters()), dict(net.named_parameters())
        same = []
        for names in model.bucket_names():
            wire = np.concatenate([local[n].grad.ravel() for n in names]) * (1.0 / comm.size)
            wire = wire.astype(np.float16) if hook else wire
            want = ring_allreduce(comm, wire).astype(np.float64)
            got = np.concatenate([reduced[n].grad.ravel() for n in names])
            same.append(got.tobytes() == want.tobytes())
        out[str(hook)] = {"same": same, "buckets": len(model.buckets)}
    return out


class ReversedChain(nn.Module):
    """Linear layers registered in the reverse of the order forward uses them, so DDP's
    bucket 0 (the last registered parameter) is the last one ready: with one parameter per
    bucket, every bucket launches at the same hook and all rings are in flight at once."""

    def __init__(self, layers=6):
        super().__init__()
        rng = np.random.default_rng(2)
        self.names = [f"l{k}" for k in reversed(range(layers))]
        for name in self.names:
            setattr(self, name, nn.Linear(IN, IN, rng=rng, dtype=np.float64))

    def forward(self, x):
        for name in reversed(self.names):
            x = getattr(self, name)(x).relu() if name != "l0" else getattr(self, name)(x)
        return x


class WideSyncBN(nn.Module):
    """C parameters in front of a SyncBatchNorm of C channels: its backward all-reduce
    (2C float64) needs more scratch than DDP's one bucket (C float64)."""

    def __init__(self, comm, channels):
        super().__init__()
        self.expand = nn.Linear(1, channels, bias=False, rng=np.random.default_rng(3), dtype=np.float64)
        self.norm = SyncBatchNorm(channels, comm, affine=False, dtype=np.float64)

    def forward(self, x):
        return self.norm(self.expand(x))


def memory_peaks(comm):
    """comm_peak of a step counts the scratch held during forward and backward, whether DDP
    overlaps its buckets or not, and SyncBatchNorm's all-reduces."""
    x, y = data(1)[0]
    xs, ys = local_shard((x, y), comm)
    out = {}
    for overlap in (True, False):
        net = ReversedChain()
        model = wrap(net, "ddp", comm, bucket_cap_mb=1e-6, overlap=overlap)
        opt = SGD(model.parameters(), lr=0.1)
        peaks = []
        for _ in range(2):
            train_step(model, opt, xs, ys)
            peaks.append(model.memory.comm_peak)
        out[f"overlap={overlap}"] = {"peaks": peaks, "bucket_counts": [b.flat.size for b in model.buckets]}
    net = WideSyncBN(comm, channels=24)
    model = wrap(net, "ddp", comm, overlap=False, broadcast_buffers=False)  # no buffer scratch
    opt = SGD(model.parameters(), lr=0.1)
    peaks = []
    for _ in range(2):
        loss = (model(Tensor(xs[:, :1])) * np.linspace(-1, 1, 24)).mean()
        model.zero_grad()
        loss.backward()
        model.step(opt)
        peaks.append(model.memory.comm_peak)
    out["syncbn"] = {"peaks": peaks, "channels": 24, "bucket_counts": [b.flat.size for b in model.buckets]}
    return out


def syncbn_large_offset_and_eval(comm):
    """Data far from zero (mean 1000, std 0.01): SyncBatchNorm against BatchNorm on the
    global batch (float64); then eval mode with track_running_stats=False, which must use
    this rank's own batch statistics and communicate nothing (as PyTorch)."""
    rng = np.random.default_rng(21)
    x = 1000.0 + 0.01 * rng.standard_normal((23, 3))
    ref = nn.BatchNorm1d(3, dtype=np.float64)
    sync = SyncBatchNorm(3, comm, dtype=np.float64)
    want = ref(Tensor(x)).data
    xs = local_shard(x, comm)
    start, stop = shard_bounds(len(x), comm.size, comm.rank)
    got = sync(Tensor(xs)).data
    rel = lambda a, b: float(np.abs(a - b).max() / np.abs(b).max())  # noqa: E731
    result = {"output": rel(got, want[start:stop]), "running_var": rel(sync.running_var.data, ref.running_var.data),
              "running_mean": rel(sync.running_mean.data, ref.running_mean.data)}
    free = SyncBatchNorm(3, comm, track_running_stats=False, dtype=np.float64).eval()
    local_bn = nn.BatchNorm1d(3, track_running_stats=False, dtype=np.float64).eval()
    comm.ledger.reset()
    eval_out = free(Tensor(xs)).data
    result["eval_vs_local_batch_stats"] = float(np.abs(eval_out - local_bn(Tensor(xs)).data).max())
    result["eval_messages"] = comm.ledger.totals()["messages_sent"]
    return result


def memory(comm):
    out = {}
    for strategy in ("dp", "hub", "ddp"):
        net = MLP(IN, HIDDEN, OUT, rng=4, dtype=np.float64)
        model = wrap(net, strategy, comm)
        opt = Adam(model.parameters(), lr=1e-3)
        for x, y in data(2):
            train_step(model, opt, *local_shard((x, y), comm))
        out[strategy] = model.memory.as_dict()
    return out


def main():
    comm = Communicator()
    emit({"syncbn": batchnorm_vs_local(comm, "sync"),
          "plain_bn": batchnorm_vs_local(comm, "batch", steps=3),
          "syncbn_cnn": syncbn_cnn_converted(comm),
          "no_sync": no_sync_accumulation(comm),
          "overlap": overlap_events(comm, True),
          "overlap_static": overlap_events(comm, True, static_graph=True),
          "no_overlap": overlap_events(comm, False),
          "unused": unused_parameters(comm),
          "drift": drift(comm),
          "fp16": fp16_hook(comm),
          "vs_blocking_ring": ddp_vs_blocking_ring(comm),
          "memory": memory(comm),
          "memory_peaks": memory_peaks(comm),
          "syncbn_precision": syncbn_large_offset_and_eval(comm),
          "shard": list(shard_bounds(BATCH, comm.size, comm.rank))})


main()
