"""Worker, run under a PLAIN ``mpiexec -n N python`` (no ``-m mpi4py``, so an exception on
one rank does not abort the others): every error that rank 0 alone can see must be raised
on every rank, or the others would wait forever. Each case catches the error, records its
message, and checks that the ranks can still talk (an all-reduce after it). Also: a rank
with an empty shard is no error (it asks rank 0 for the verdict, and training matches the
global batch). Emits {case: {"message": ..., "type": ..., "then": sum of ranks}}.
"""
import numpy as np

from minidist import Tensor
from minidist.comm import Communicator, ring_allreduce
from minidist.nn import functional as F
from minidist.optim import SGD
from minidist.parallel import MLP, local_shard, wrap
from mpi_util import emit

BATCH, IN, OUT = 7, 3, 2
comm = Communicator()
root = comm.rank == 0
rng = np.random.default_rng(0)
X, Y = rng.standard_normal((BATCH, IN)), rng.integers(0, OUT, BATCH)


def model(strategy, **options):
    net = MLP(IN, 4, OUT, rng=0, dtype=np.float64)
    m = wrap(net, strategy, comm, **options)
    return net, m, SGD(m.parameters(), lr=0.1)


def hub_no_samples(reduce="linear"):
    _, m, opt = model("hub", reduce=reduce)
    m.step(opt)  # no forward on any rank


def dp_no_samples(**options):
    _, m, opt = model("dp", **options)
    m.step(opt)


def dp_scatter_none():
    _, m, _ = model("dp", scatter_inputs=True)
    m(None)  # rank 0 forgot the global batch


def dp_scatter_targets_none():
    _, m, _ = model("dp", scatter_inputs=True)
    m(X if root else None)
    m.scatter(None)


def dp_root_loss(targets, loss_fn=F.cross_entropy):
    _, m, opt = model("dp", loss_on_root=True)
    out = m(Tensor(local_shard(X, comm)))
    loss = m.loss(loss_fn, out, targets if root else None)  # rank 0 raises here ...
    m.zero_grad()
    loss.backward()  # ... the others here, where they wait for rank 0
    m.step(opt)


def failing_loss(out, target):
    raise ValueError(f"this loss refuses {out.shape[0]} rows")


CASES = {
    "hub-no-samples": hub_no_samples,
    "hub-binomial-no-samples": lambda: hub_no_samples("binomial"),
    "dp-no-samples": dp_no_samples,
    "dp-scatter-no-samples": lambda: dp_no_samples(scatter_inputs=True),
    "dp-scatter-none": dp_scatter_none,
    "dp-scatter-targets-none": dp_scatter_targets_none,
    "dp-root-targets-none": lambda: dp_root_loss(None),
    "dp-root-targets-too-many": lambda: dp_root_loss(np.concatenate([Y, Y[:3]])),
    "dp-root-loss-fails": lambda: dp_root_loss(Y, failing_loss),
}


def empty_shard(strategy):
    """Two samples, so ranks 2.. get none: no error, and the global batch's result."""
    x, y = X[:2], Y[:2]
    ref = MLP(IN, 4, OUT, rng=0, dtype=np.float64)
    opt_ref = SGD(ref.parameters(), lr=0.1)
    F.cross_entropy(ref(Tensor(x)), y).backward()
    opt_ref.step()
    net, m, opt = model(strategy)
    xs, ys = local_shard((x, y), comm)
    with np.errstate(all="ignore"):  # the empty shard's mean loss is 0/0
        loss = F.cross_entropy(m(Tensor(xs)), ys)
        m.zero_grad()
        loss.backward()
    m.step(opt)
    diff = max(float(np.abs(a.data - b.data).max()) for a, b in zip(net.parameters(), ref.parameters()))
    return {"rows": len(xs), "diff": diff}


result = {}
for name, case in CASES.items():
    try:
        case()
        outcome = {"message": None, "type": None}
    except Exception as e:  # noqa: BLE001 - the point is which error each rank sees
        outcome = {"message": str(e), "type": type(e).__name__}
    outcome["then"] = int(ring_allreduce(comm, np.array([comm.rank]))[0])  # the ranks still agree
    result[name] = outcome
for strategy in ("hub", "dp"):
    result[f"{strategy}-empty-shard"] = empty_shard(strategy)
emit(result)
