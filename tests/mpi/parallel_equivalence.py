"""Worker: every strategy against the local reference, in float64, on one launch, for an
MLP without normalisation, with LayerNorm and with SyncBatchNorm (reference: BatchNorm on
the global batch).

For each strategy variant: the same initial parameters and the same global batches
(uneven shards when N does not divide the batch), SGD with momentum and weight decay for
STEPS steps. Emits, per variant: the max |param - local| after each step, this rank's
parameter digest, the per-phase ledger of one step, and what the closed forms need
(parameter count, bucket sizes, shard sizes).
"""
import sys

import numpy as np

from minidist import Tensor
from minidist.comm import Communicator
from minidist.nn import functional as F
from minidist.optim import SGD
from minidist.parallel import MLP, local_shard, parameter_digest, shard_sizes, wrap
from minidist.parallel.trainer import train_step
from mpi_util import emit
from parallel_variants import VARIANTS

STEPS, BATCH, IN, HIDDEN, OUT = 5, 22, 5, 12, 4
LEDGER_STEP = 2  # the step whose per-phase ledger is reported



def batches():
    rng = np.random.default_rng(123)
    return [(rng.standard_normal((BATCH, IN)), rng.integers(0, OUT, BATCH)) for _ in range(STEPS)]


def params_of(net):
    return np.concatenate([p.data.ravel() for p in net.parameters()])


def run_local(norm, data):
    # SyncBatchNorm must reproduce BatchNorm over the global batch
    net = MLP(IN, HIDDEN, OUT, norm="batch" if norm == "sync" else norm, rng=7, dtype=np.float64)
    model = wrap(net, "local")
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    history = []
    for x, y in data:
        loss = F.cross_entropy(model(Tensor(x)), y)
        model.zero_grad()
        loss.backward()
        model.step(opt)
        history.append(params_of(net))
    return history


def run_variant(comm, strategy, options, norm, data, reference):
    # rank-dependent initialisation: the wrap-time broadcast must make replicas equal
    net = MLP(IN, HIDDEN, OUT, norm=norm, comm=comm, rng=7 + comm.rank, dtype=np.float64)
    model = wrap(net, strategy, comm, **options)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    diffs, ledger = [], None
    for step, (x, y) in enumerate(data):
        comm.ledger.reset()
        # dp scatters rank 0's global batch, or computes the loss on the global targets
        x_in = x if options.get("scatter_inputs") else local_shard(x, comm)
        y_in = y if options.get("scatter_inputs") or options.get("loss_on_root") else local_shard(y, comm)
        train_step(model, opt, x_in, y_in)
        diffs.append(float(np.abs(params_of(net) - reference[step]).max()))
        if step == LEDGER_STEP:
            ledger = comm.ledger.by_phase()
    result = {"diffs": diffs, "digest": parameter_digest(net).hex(), "ledger": ledger,
              "optimizer_bytes": opt.state_nbytes()}
    if strategy == "ddp":
        result["bucket_counts"] = [b.layout.count for b in model.buckets]
    return result


def main():
    comm = Communicator()
    norms = sys.argv[1].split(",") if len(sys.argv) > 1 else ["none", "layer", "sync"]
    data = batches()
    out = {"shard_sizes": shard_sizes(BATCH, comm.size).tolist(), "batch": BATCH, "in": IN,
           "out": OUT, "norms": {}}
    for norm in norms:
        reference = run_local(norm, data)
        probe = MLP(IN, HIDDEN, OUT, norm=norm, comm=comm, rng=0, dtype=np.float64)
        result = out["norms"][norm] = {"n_params": int(sum(p.data.size for p in probe.parameters())),
                                       "float_buffers": int(sum(b.data.size for b in probe.buffers()
                                                                if b.data.dtype == np.float64)),
                                       "int_buffers": int(sum(b.data.size for b in probe.buffers()
                                                              if b.data.dtype == np.int64)),
                                       "variants": {}}
        for name, (strategy, options) in VARIANTS.items():
            result["variants"][name] = run_variant(comm, strategy, options, norm, data, reference)
    emit(out)


main()
