"""Worker: a CNN (conv, BatchNorm or SyncBatchNorm, max pool) under ddp where rank 1's
shard is empty (a global batch of 1 image on 2 ranks), three SGD steps. Emits the max
|param - local reference| per norm, the reference trained on the global batch (with
BatchNorm for "sync", which SyncBatchNorm must reproduce; plain BatchNorm on rank 0's
whole batch is the global batch too). Also "syncbn_one": SyncBatchNorm over one value
per channel in all, which must raise on every rank before counting the batch."""
import numpy as np

from minidist import Tensor, nn
from minidist.comm import Communicator
from minidist.nn import functional as F
from minidist.optim import SGD
from minidist.parallel import build_model, local_shard, wrap
from mpi_util import emit


def net(norm, comm=None):
    return build_model("cnn", norm=norm, comm=comm, rng=0, dtype=np.float64,
                       in_channels=1, num_classes=3, image_size=8)


def train(model, opt, shard):
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = rng.standard_normal((1, 1, 8, 8)), rng.integers(0, 3, 1)
        x, y = shard(x, y)
        loss = F.cross_entropy(model(Tensor(x)), y, reduction="sum")
        model.zero_grad()
        loss.backward()
        model.step(opt)


comm = Communicator()
out = {}
for norm in ("none", "batch", "sync"):
    ddp = wrap(net(norm, comm), "ddp", comm, average="ranks")
    train(ddp, SGD(ddp.parameters(), lr=0.1), lambda x, y: local_shard((x, y), comm))
    ref = wrap(net("batch" if norm == "sync" else norm), "local")
    train(ref, SGD(ref.parameters(), lr=0.1 / comm.size), lambda x, y: (x, y))
    out[norm] = max(float(np.abs(a.data - b.data).max()) for a, b in zip(ddp.parameters(), ref.parameters()))
# one value per channel over all ranks (rank 0: one row, rank 1: none): an error on every
# rank, with num_batches_tracked and the running statistics unchanged
bn = nn.SyncBatchNorm(3, comm, dtype=np.float64)
try:
    bn(Tensor(np.ones((1 if comm.rank == 0 else 0, 3))))
    out["syncbn_one"] = "no error"
except ValueError as exc:
    out["syncbn_one"] = str(exc)
out["syncbn_state"] = {k: v.tolist() for k, v in bn.state_dict().items()}
emit(out)
