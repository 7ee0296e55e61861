"""Lab: BatchNorm's output for one sample depends on the other samples in its batch;
LayerNorm's does not.

The claim, and why it matters for data parallelism. BatchNorm normalises each feature with
the mean and variance of the *batch*; LayerNorm with those of the *sample*. Under DDP each
rank only sees its shard of the global batch, so plain BatchNorm normalises with shard
statistics and computes something different from the single-process model on the global
batch: the replicas still agree with each other (DDP averages their gradients), but they
drift away from the reference. SyncBatchNorm all-reduces the statistics, so it computes
exactly the global-batch BatchNorm; LayerNorm never needed the batch.

What the experiment does (float64, an MLP on 2-D spirals, the same initial weights and the
same global batches everywhere):

1. Drift. For each norm in BatchNorm, SyncBatchNorm, LayerNorm, train K steps under DDP
   on N ranks (per-rank batch b, `DistributedSampler` shards) and, on every rank, the same
   model in one process on the global batch of N*b samples (BatchNorm for the two batch
   norms: that is what SyncBatchNorm must reproduce). Report the largest parameter
   difference after K steps and the held-out accuracy of both.
2. Per-sample dependence. A freshly built model in training mode; rank 0's output for its
   sample 0, then again after (a) its own sample 1 is replaced by noise, (b) a sample of
   another rank is replaced, (c) the same as (a) in eval mode (running statistics).

Run it:

    mpiexec -n 4 python labs/batchnorm_vs_layernorm.py              # K=40 steps, b=16
    mpiexec -n 4 python labs/batchnorm_vs_layernorm.py --steps 100 --batch 4
    mpiexec -n 2 python labs/batchnorm_vs_layernorm.py --quick --json runs/lab-bn-ln.json

(An error on one rank ends the whole job: minidist's fail-stop.) With one
rank (plain `python labs/...py`) the shard is the global batch, so nothing drifts.
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import numpy as np

from minidist import Tensor, no_grad
from minidist.comm import Communicator
from minidist.data import spirals
from minidist.optim import SGD
from minidist.parallel import MLP, Trainer, distributed_loader, wrap

NORMS = {"batch": "BatchNorm", "sync": "SyncBatchNorm", "layer": "LayerNorm"}


def parse_args(argv=None):
    p = common.lab_parser(__doc__)
    p.add_argument("--steps", type=int, default=40, help="K: training steps")
    p.add_argument("--batch", type=int, default=16, help="b: samples per rank per step (>= 2)")
    p.add_argument("--hidden", type=int, default=32, help="MLP width")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--samples", type=int, default=600, help="training set size")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.hidden, args.samples = 4, 8, 120
        args.batch = min(args.batch, 8)
    if args.batch < 2:
        p.error(f"--batch must be >= 2: the per-sample check perturbs a second sample (got {args.batch})")
    return args


def make_net(args, norm, comm):
    return MLP(2, args.hidden, 3, norm=norm, comm=comm if norm == "sync" else None, rng=args.seed,
               dtype=np.float64)


def train(args, comm, norm, distributed, data, test):
    """K steps of `norm` under DDP (`distributed`) or in one process on the global batch.
    Returns (the trained net, held-out accuracy)."""
    X, y = data
    net = make_net(args, norm, comm)
    model = wrap(net, "ddp", comm) if distributed else wrap(net, "local")
    opt = SGD(model.parameters(), lr=args.lr, momentum=0.9)
    if distributed:  # rank r's shard; step t of all ranks together = the reference's batch t
        loader = distributed_loader(X, y, args.batch, comm, seed=args.seed, drop_last=True)
    else:
        loader = distributed_loader(X, y, args.batch * comm.size, None, seed=args.seed, drop_last=True)
    trainer = Trainer(model, opt, comm=comm if distributed else None, progress=False)
    trainer.train_epoch(common.StepLoader(loader, args.steps))
    return net, trainer.evaluate(*test)


def drift(args, comm, data, test) -> list[dict]:
    rows, references = [], {}
    for norm in NORMS:
        ref_norm = "batch" if norm == "sync" else norm  # SyncBN must equal BN on the global batch
        if ref_norm not in references:
            references[ref_norm] = train(args, comm, ref_norm, False, data, test)
        ref_net, ref_acc = references[ref_norm]
        net, acc = train(args, comm, norm, True, data, test)
        diff = np.abs(common.flat_parameters(net) - common.flat_parameters(ref_net)).max()
        rows.append({"norm": norm, "layer": NORMS[norm], "reference": f"{NORMS[ref_norm]}, 1 process",
                     "max_param_diff": common.max_over_ranks(comm, diff),
                     "accuracy": acc, "reference_accuracy": ref_acc})
    return rows


def output_change(net, x, x_changed) -> float:
    """max |f(x)[0] - f(x_changed)[0]|: how much sample 0's output moves (every rank runs
    both forwards, which SyncBatchNorm needs)."""
    with no_grad():
        before = net(Tensor(x)).data[0]
        after = net(Tensor(x_changed)).data[0]
    return float(np.abs(after - before).max())


def per_sample(args, comm, X) -> list[dict]:
    rng = np.random.default_rng(args.seed + 1)  # same draws on every rank
    batch = X[: args.batch * comm.size].reshape(comm.size, args.batch, -1)
    noise = rng.standard_normal(batch.shape[1:])
    x = np.ascontiguousarray(batch[comm.rank])
    own = x.copy()
    own[1] = noise[1]  # another sample in this rank's own shard
    other = x.copy()
    if comm.rank == comm.size - 1 and comm.size > 1:
        other[0] = noise[0]  # a sample that only the last rank holds
    rows = []
    for norm in NORMS:
        net = make_net(args, norm, comm)
        same_train = output_change(net, x, own)
        other_train = output_change(net, x, other) if comm.size > 1 else None
        net.eval()
        same_eval = output_change(net, x, own)
        rows.append({"norm": norm, "layer": NORMS[norm], "same_shard_train": same_train,
                     "other_rank_train": other_train, "same_shard_eval": same_eval})
    return rows  # rank 0's view: its sample 0


def conclude(drift_rows, sample_rows, size) -> tuple[dict, str]:
    d = {r["norm"]: r["max_param_diff"] for r in drift_rows}
    s = {r["norm"]: r for r in sample_rows}
    tol = common.TOLERANCE
    checks = {
        "BatchNorm's output depends on another sample of its batch": s["batch"]["same_shard_train"] > tol,
        "LayerNorm's output does not": s["layer"]["same_shard_train"] <= tol,
        "in eval mode BatchNorm's output does not either": s["batch"]["same_shard_eval"] <= tol,
    }
    if size > 1:
        checks.update({
            "BatchNorm under DDP drifts from the global-batch reference": d["batch"] > 1e-6,
            "SyncBatchNorm does not drift": d["sync"] <= tol,
            "LayerNorm does not drift": d["layer"] <= tol,
            "SyncBatchNorm's output depends on other ranks' samples": s["sync"]["other_rank_train"] > tol,
        })
    ok, word = common.verdict(checks)
    text = (f"Conclusion: the claim {word}. BatchNorm moved sample 0's output by "
            f"{s['batch']['same_shard_train']:.2e} when a batch-mate changed, LayerNorm by "
            f"{s['layer']['same_shard_train']:.2e}")
    if size > 1:
        text += (f"; after the training steps on {size} ranks BatchNorm is {d['batch']:.2e} from "
                 f"the global-batch reference, SyncBatchNorm {d['sync']:.2e}, LayerNorm {d['layer']:.2e}")
    return {"holds": ok, "checks": checks}, text + "."


def main(argv=None):
    args = parse_args(argv)
    comm = Communicator()
    X, y = spirals(max(args.samples // 3, 1), 3, seed=args.seed)
    Xt, yt = spirals(100 if args.quick else 200, 3, seed=args.seed + 1000)
    data, test = (X.astype(np.float64), y), (Xt.astype(np.float64), yt)

    drift_rows = drift(args, comm, data, test)
    sample_rows = per_sample(args, comm, data[0])
    verdict, conclusion = conclude(drift_rows, sample_rows, comm.size)

    text = "\n".join([
        f"BatchNorm vs LayerNorm under DDP: N={comm.size} ranks x b={args.batch} samples, "
        f"{args.steps} steps, MLP(2-{args.hidden}-{args.hidden}-3), float64",
        "", "1. Drift from the single-process model on the global batch",
        common.format_table(drift_rows, [
            ("layer", "norm under DDP", "{}"), ("reference", "reference", "{}"),
            ("max_param_diff", "max |param - reference|", "{:.2e}"),
            ("accuracy", "eval acc (DDP)", "{:.3f}"), ("reference_accuracy", "eval acc (ref)", "{:.3f}")]),
        "", "2. How much rank 0's sample-0 output moves when another sample changes",
        common.format_table(sample_rows, [
            ("layer", "norm", "{}"), ("same_shard_train", "same shard, train", "{:.2e}"),
            ("other_rank_train", "other rank's sample, train", "{:.2e}"),
            ("same_shard_eval", "same shard, eval", "{:.2e}")]),
        "", conclusion])
    results = {"lab": "batchnorm_vs_layernorm", "world_size": comm.size,
               "config": {k: v for k, v in vars(args).items() if k != "json"},
               "drift": drift_rows, "per_sample": sample_rows, "conclusion": conclusion, **verdict}
    common.finish(comm, args, results, text)


if __name__ == "__main__":
    main()
