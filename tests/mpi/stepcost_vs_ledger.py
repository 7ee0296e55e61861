"""For each strategy: one training step's ledger, phase by phase, beside stepcost's
prediction for the same model and options (rank 0 and rank 1)."""
import numpy as np

import minidist.nn as nn
import minidist.nn.functional as F
from minidist import Tensor, optim
from minidist.comm import Communicator
from minidist.parallel import wrap
from minidist.cost.stepcost import describe, predict_step
from mpi_util import emit

comm = Communicator()
CASES = [("dp", {}), ("dp", {"broadcast": "binomial"}), ("hub", {}),
         ("hub", {"reduce": "binomial", "broadcast": "binomial"}),
         ("ddp", {"bucket_cap_mb": 0.002}), ("ddp", {"algorithm": "recursive_doubling", "bucket_cap_mb": 0.004}),
         ("dp", {"average": "ranks"}), ("hub", {"average": "ranks"}), ("ddp", {"average": "ranks"}),
         ("ddp", {"bucket_cap_mb": 0.002, "overlap": False}),
         ("ddp", {"algorithm": "recursive_doubling", "bucket_cap_mb": 0.0005, "overlap": False}),
         ("ddp", {"algorithm": "rabenseifner", "bucket_cap_mb": 0.0005, "overlap": False}),
         ("ddp", {"find_unused_parameters": True, "overlap": False}),
         ("hub", {"find_unused_parameters": True}), ("dp", {"find_unused_parameters": True}),
         ("hub", {"find_unused_parameters": True, "frozen": True}),
         ("dp", {"frozen": True}), ("hub", {"frozen": True}), ("ddp", {"frozen": True, "overlap": False}),
         ("dp", {"nonfinite": "ignore"}), ("dp", {"nonfinite": "ignore", "average": "ranks"}),
         ("hub", {"nonfinite": "skip", "average": "ranks"}), ("hub", {"nonfinite": "ignore"}),
         ("ddp", {"nonfinite": "ignore", "average": "ranks", "overlap": False}),
         ("ddp", {"nonfinite": "skip", "bucket_cap_mb": 0.002}),
         ("dp", {"loss_on_root": True, "outputs": (6 * comm.size + 1, 5)}),
         ("dp", {"loss_on_root": True, "nonfinite": "ignore", "outputs": (6 * comm.size + 1, 5)}),
         # a batch whose outputs and their gradients outweigh the parameter broadcast on rank 0
         ("dp", {"loss_on_root": True, "outputs": (60 * comm.size + 1, 5), "base": 60})]


def model():
    rng = np.random.default_rng(0)
    return nn.Sequential(nn.Linear(7, 33, rng=rng), nn.BatchNorm1d(33), nn.ReLU(),
                         nn.Linear(33, 5, rng=rng))


def shard(rank, base=6):  # rank 0 has one row more: np.array_split's layout of base N + 1 rows
    rng = np.random.default_rng(rank)
    rows = base + (rank == 0)
    return rng.standard_normal((rows, 7)).astype(np.float32), rng.integers(0, 5, rows)


def batch(base):
    """This rank's inputs and targets, and the global targets (loss_on_root's, on rank 0)."""
    x, y = shard(comm.rank, base)
    return Tensor(x), y, np.concatenate([shard(r, base)[1] for r in range(comm.size)])
test_only = {"frozen", "outputs", "base"}  # options wrap does not take
out = []
for strategy, options in CASES:
    net = model()
    if options.get("frozen"):  # a frozen first layer: broadcast, never reduced
        for p in net[0].parameters():
            p.requires_grad = False
    wrapped = wrap(net, strategy, comm, **{k: v for k, v in options.items() if k not in test_only})
    x, y, y_global = batch(options.get("base", 6))
    opt = optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for step in range(2):
        comm.ledger.reset()
        if options.get("loss_on_root"):
            loss = wrapped.loss(F.cross_entropy, wrapped(x), y_global if comm.rank == 0 else None)
        else:
            loss = F.cross_entropy(wrapped(x), y)
        wrapped.zero_grad()
        loss.backward()
        wrapped.step(opt)
    measured = {phase: {k: int(v) for k, v in t.items() if not k.endswith("seconds")}
                for phase, t in comm.ledger.by_phase().items()}
    who = "rank0" if comm.rank == 0 else "other"
    wrap_only = {"overlap", "frozen", "base"}  # options the predictor does not need
    predicted = predict_step(strategy, comm.size, describe(net),
                             **{k: v for k, v in options.items() if k not in wrap_only})
    out.append({"strategy": strategy, "options": options, "measured": measured,
                "predicted": {ph: p[who] for ph, p in predicted["phases"].items()},
                "memory": wrapped.memory.as_dict(), "predicted_memory": predicted["memory"][who],
                "check": comm.rank <= 1})
emit(out)
