"""Worker for tests/test_parallel_status.py, under a PLAIN ``mpiexec -n N python`` (an
error left on one rank would hang the others): the step's status riding in the gradient
messages. Per strategy: one steady-state step's ledger (a model without buffers); a NaN in
the last rank's batch at step 2 under nonfinite="raise" (the error on every rank, then
the ranks still talk) and under "skip" (parameters unchanged and equal everywhere, then
training goes on)."""
import numpy as np

from minidist import Tensor
from minidist.comm import Communicator, ring_allreduce
from minidist.nn import functional as F
from minidist.optim import SGD
from minidist.parallel import MLP, local_shard, parameter_digest, wrap
from minidist.cost.stepcost import describe, predict_step
from mpi_util import emit

BATCH, IN, OUT = 11, 3, 2
comm = Communicator()
rng = np.random.default_rng(0)
X, Y = rng.standard_normal((4, BATCH, IN)), rng.integers(0, OUT, (4, BATCH))


def params(net):
    return np.concatenate([p.data.ravel() for p in net.parameters()])


def train(strategy, steps, poison_step=None, **options):
    """Train `steps` steps; at `poison_step` (1-based) the last rank's batch holds a NaN.
    Returns (net, wrapped model, ledger of the last step, parameters before each step)."""
    net = MLP(IN, 5, OUT, rng=0, dtype=np.float64)
    model = wrap(net, strategy, comm, **options)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = []
    model.row_addresses = []  # dp: where its gather rows live, at each step's end
    for step in range(1, steps + 1):
        x, y = local_shard((X[step - 1].copy(), Y[step - 1]), comm)
        if step == poison_step and comm.rank == comm.size - 1:
            x[0, 0] = np.nan
        comm.ledger.reset()
        before.append(params(net))
        loss = F.cross_entropy(model(Tensor(x)), y)
        model.zero_grad()
        loss.backward()
        model.step(opt)
        if strategy == "dp":
            model.row_addresses += [rows.__array_interface__["data"][0] for _, rows, _ in model._buffers]
    ledger = {ph: {k: int(v) for k, v in t.items() if not k.endswith("seconds")}
              for ph, t in comm.ledger.by_phase().items()}
    return net, model, ledger, before


def still_talking() -> int:
    total = np.array([float(comm.rank)])
    ring_allreduce(comm, total)
    return int(total[0])


out = {}
for strategy in ("dp", "hub", "ddp"):
    net, model, ledger, _ = train(strategy, 2)
    who = "rank0" if comm.rank == 0 else "other"
    predicted = predict_step(strategy, comm.size, describe(net))["phases"]
    case = {"digest": parameter_digest(net).hex(), "steady": ledger, "n_params": int(sum(p.data.size for p in net.parameters())),
            "buffers": len(list(net.buffers())), "row_addresses": getattr(model, "row_addresses", []), "predicted": {ph: p[who] for ph, p in predicted.items()},
            "predicted_seconds": predict_step(strategy, comm.size, describe(net))["seconds"]}
    try:
        train(strategy, 3, poison_step=2)
        case["raised"] = None
    except Exception as exc:  # noqa: BLE001 - what a user's loop would see
        case["raised"] = {"type": type(exc).__name__, "message": str(exc)}
    case["then"] = still_talking()
    net, model, ledger, before = train(strategy, 3, poison_step=2, nonfinite="skip")
    case["skip"] = {"unchanged": bool(np.array_equal(before[1], before[2])),
                    "moved_after": bool(not np.array_equal(before[2], params(net))),
                    "finite": bool(np.isfinite(params(net)).all()),
                    "digest": parameter_digest(net).hex(), "skipped": model.skipped_steps, "steps": model.steps}
    out[strategy] = case
emit(out)
