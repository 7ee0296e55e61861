"""Lab: BatchNorm degrades with tiny per-rank batches; SyncBatchNorm restores the global
batch statistics, at a communication cost.

The claim. Under DDP plain BatchNorm normalises with the statistics of each rank's shard.
With 2 samples per rank those statistics are mostly noise (with 2 values per feature a
BatchNorm1d output is +-1 whatever the input), and the running statistics used at
evaluation are averages of that noise. SyncBatchNorm gathers every rank's per-channel
statistics, so every rank normalises with the statistics of the whole global batch (N*b
samples): the model trains as BatchNorm would on one process with the global batch. The
price: per SyncBatchNorm layer and step, a ring all-gather of every rank's 2C+1 float64
(count, mean, sum of squared deviations) in the forward and an all-reduce of 2C in the
backward, on the critical path. LayerNorm needs no
batch at all.

What the experiment does. At fixed N (the mpiexec -n), for each per-rank batch b in the
sweep, train the same model (same initial weights, same shuffled data, float64) for the
same number of steps under DDP with BatchNorm, SyncBatchNorm and LayerNorm, plus the
single-process reference, BatchNorm on the global batch of N*b samples. Report the
held-out accuracy, the wall time per step, and rank 0's ledger for phase "syncbn": bytes
and messages per step, beside the closed form (`minidist.nn.syncbn.syncbn_message_counts`
per layer) and beside the gradient all-reduce's bytes.

Run it:

    mpiexec -n 4 python labs/batchnorm_tiny_batches.py                  # MLP, b = 2,4,8,32, 40 steps
    mpiexec -n 4 python labs/batchnorm_tiny_batches.py --model cnn --lr 0.05
    mpiexec -n 4 python labs/batchnorm_tiny_batches.py --batches 2,16 --steps 200 --seed 1
    mpiexec -n 3 python labs/batchnorm_tiny_batches.py --quick --json runs/lab-tiny.json

Accuracies come from one seed: try a few (--seed) before trusting a small gap.
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import numpy as np

from minidist.comm import Communicator
from minidist.data import spirals, synthetic_images
from minidist.optim import SGD
from minidist.parallel import SyncBatchNorm, Trainer, build_model, distributed_loader, wrap
from minidist.cost import syncbn_message_counts

NORMS = {"batch": "BatchNorm", "sync": "SyncBatchNorm", "layer": "LayerNorm"}


def parse_args(argv=None):
    p = common.lab_parser(__doc__)
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="mlp: 2-D spirals, 3 classes; cnn: 16x16 synthetic shapes, 10 classes")
    p.add_argument("--batches", type=common.int_list, default=[2, 4, 8, 32],
                   help="per-rank batch sizes to sweep (comma-separated, each >= 2)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--hidden", type=int, default=64, help="MLP width")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--samples", type=int, default=600, help="training set size")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.hidden, args.samples = 3, 8, 150
        args.batches = [2, 8] if p.get_default("batches") == args.batches else args.batches
    if min(args.batches) < 2:
        p.error(f"every per-rank batch must be >= 2: BatchNorm cannot normalise one sample "
                f"(got {args.batches})")
    return args


def dataset(args):
    if args.model == "mlp":
        X, y = spirals(max(args.samples // 3, 1), 3, seed=args.seed)
        Xt, yt = spirals(100, 3, seed=args.seed + 1000)
    else:
        X, y = synthetic_images(args.samples, size=16, seed=args.seed)
        Xt, yt = synthetic_images(300, size=16, seed=args.seed + 1000)
    return (X.astype(np.float64), y), (Xt.astype(np.float64), yt)


def make_net(args, norm, comm):
    sizes = ({"in_features": 2, "hidden": args.hidden, "out_features": 3} if args.model == "mlp"
             else {"in_channels": 1, "num_classes": 10, "image_size": 16})
    return build_model(args.model, norm=norm, comm=comm if norm == "sync" else None, rng=args.seed,
                       dtype=np.float64, **sizes)


def syncbn_closed_form(net, size: int, rank: int) -> dict:
    """Bytes and messages rank `rank` sends per step in phase "syncbn": per SyncBatchNorm
    layer, `syncbn_message_counts` (a ring all-gather of 2C+1 float64 per rank forward,
    a ring all-reduce of 2C backward)."""
    out = {"bytes_sent": 0, "messages_sent": 0}
    for layer in net.modules():
        if isinstance(layer, SyncBatchNorm):
            got = syncbn_message_counts(layer.num_features, size, rank)
            out["bytes_sent"] += got["bytes_sent"]
            out["messages_sent"] += got["messages_sent"]
    return out


def run(args, comm, norm, batch, data, test, reference=None):
    """Train `args.steps` steps and return (the table row, the net). `norm` is "batch",
    "sync" or "layer" under DDP with `batch` samples per rank, or "batch-global":
    BatchNorm in one process on the global batch of N*`batch` samples (the reference).
    Given `reference` (a net), the row also holds the largest parameter difference."""
    distributed = norm != "batch-global"
    net = make_net(args, "batch" if not distributed else norm, comm)
    model = wrap(net, "ddp", comm) if distributed else wrap(net, "local")
    opt = SGD(model.parameters(), lr=args.lr, momentum=0.9)
    if distributed:
        loader = distributed_loader(*data, batch, comm, seed=args.seed, drop_last=True)
    else:
        loader = distributed_loader(*data, batch * comm.size, None, seed=args.seed, drop_last=True)
    trainer = Trainer(model, opt, comm=comm if distributed else None, progress=False)
    comm.ledger.reset()  # count the training steps only: not wrap's broadcasts, not the eval
    history = trainer.train_epoch(common.StepLoader(loader, args.steps))
    syncbn, grads = comm.ledger.totals("syncbn"), comm.ledger.totals("grad-allreduce")
    row = {"batch": batch, "global_batch": batch * comm.size,
           "norm": norm, "layer": NORMS.get(norm, "BatchNorm, 1 process, global batch"),
           "accuracy": trainer.evaluate(*test), "ms_per_step": 1e3 * history["seconds"] / args.steps}
    if distributed:
        expected = syncbn_closed_form(net, comm.size, comm.rank)
        row.update({"syncbn_bytes_sent": syncbn["bytes_sent"] / args.steps,
                    "syncbn_messages_sent": syncbn["messages_sent"] / args.steps,
                    "syncbn_seconds": syncbn["seconds"] / args.steps,
                    "syncbn_bytes_closed_form": expected["bytes_sent"],
                    "syncbn_messages_closed_form": expected["messages_sent"],
                    "grad_allreduce_bytes_sent": grads["bytes_sent"] / args.steps})
    if reference is not None:
        diff = np.abs(common.flat_parameters(net) - common.flat_parameters(reference)).max()
        row["max_param_diff"] = common.max_over_ranks(comm, diff)
    return row, net


def conclude(rows, batches, size) -> tuple[dict, str]:
    acc = {(r["norm"], r["batch"]): r["accuracy"] for r in rows}
    small, large = min(batches), max(batches)
    sync = [r for r in rows if r["norm"] == "sync"]
    others = [r for r in rows if r["norm"] in ("batch", "layer")]
    checks = {
        f"BatchNorm at b={small} is less accurate than SyncBatchNorm":
            acc["batch", small] < acc["sync", small],
        "SyncBatchNorm trains exactly as BatchNorm on the global batch":
            all(r["max_param_diff"] <= common.TOLERANCE for r in sync),
        "SyncBatchNorm's traffic is the closed form": all(
            r["syncbn_bytes_sent"] == r["syncbn_bytes_closed_form"]
            and r["syncbn_messages_sent"] == r["syncbn_messages_closed_form"] for r in sync),
        "BatchNorm and LayerNorm send nothing for statistics":
            all(r["syncbn_bytes_sent"] == 0 for r in others),
    }
    if large > small:
        better = acc["batch", large] > acc["batch", small]
        checks[f"BatchNorm is better at b={large} than at b={small}"] = better
    if size > 1:
        checks["SyncBatchNorm costs messages"] = all(r["syncbn_messages_sent"] > 0 for r in sync)
    ok, word = common.verdict(checks)
    cost = sync[0]["syncbn_bytes_sent"], sync[0]["syncbn_messages_sent"]
    text = (f"Conclusion: the claim {word}. At b={small} per rank the held-out accuracy is "
            f"{acc['batch', small]:.3f} with BatchNorm, {acc['sync', small]:.3f} with SyncBatchNorm "
            f"(BatchNorm on b={large}: {acc['batch', large]:.3f}); SyncBatchNorm's statistics cost rank 0 "
            f"{cost[0]:.0f} bytes in {cost[1]:.0f} messages per step, whatever b.")
    return {"holds": ok, "checks": checks}, text


def main(argv=None):
    args = parse_args(argv)
    comm = Communicator()
    data, test = dataset(args)
    rows = []
    for batch in args.batches:
        ref_row, reference = run(args, comm, "batch-global", batch, data, test)
        rows.append(ref_row)
        for norm in NORMS:
            rows.append(run(args, comm, norm, batch, data, test,
                            reference=reference if norm != "layer" else None)[0])
    ddp_rows = [r for r in rows if r["norm"] in NORMS]
    verdict, conclusion = conclude(ddp_rows, args.batches, comm.size)
    text = "\n".join([
        f"Tiny per-rank batches: N={comm.size} ranks, {args.steps} steps, {args.model} "
        f"(float64), eval on held-out data; ledger numbers are rank 0's, per step",
        "",
        common.format_table(rows, [
            ("batch", "b/rank", "{}"), ("global_batch", "global", "{}"), ("layer", "norm", "{}"),
            ("accuracy", "eval acc", "{:.3f}"), ("max_param_diff", "|param - BN global|", "{:.1e}"),
            ("ms_per_step", "ms/step", "{:.1f}"),
            ("syncbn_bytes_sent", "syncbn B sent", "{:.0f}"),
            ("syncbn_bytes_closed_form", "closed form", "{}"),
            ("syncbn_messages_sent", "syncbn msgs", "{:.0f}"),
            ("grad_allreduce_bytes_sent", "grad-allreduce B", "{:.0f}")]),
        "", conclusion])
    results = {"lab": "batchnorm_tiny_batches", "world_size": comm.size,
               "config": {k: v for k, v in vars(args).items() if k != "json"},
               "rows": rows, "conclusion": conclusion, **verdict}
    common.finish(comm, args, results, text)


if __name__ == "__main__":
    main()
