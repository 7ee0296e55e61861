"""Lab 2: BatchNorm backfires with a tiny batch; the batch should be much larger than the
number of classes.

What it does. On N ranks (the mpiexec -n), for each model (an MLP on K-class spirals, a
CNN on the 10 synthetic shape classes), each number of classes K and each per-rank batch
b, train the same initial weights on the same shuffled data under DDP with no norm,
BatchNorm, SyncBatchNorm and LayerNorm, all at the SAME sample budget (the same number of
samples seen: steps = budget / (N b)); plus, in one process, BatchNorm and LayerNorm on the
global batch of N b samples (the references). Repeated over K seeds; held-out accuracy
(eval mode: BatchNorm uses its running statistics).

Per (model, K, b) the claim predicts: BatchNorm backfires (the same net without a norm
does better, on every seed) when b < 4K (not much larger than K), and does not when
b >= 4K. The verdict says where that prediction matched. Always required: SyncBatchNorm equals BatchNorm on the global batch to round-off
(it recovers the global batch), LayerNorm under DDP equals LayerNorm on the global batch
(it does not care how the batch is split), and SyncBatchNorm's traffic is the closed form.

    mpiexec -n 4 python labs/02_tiny_batch.py
    mpiexec -n 4 python labs/02_tiny_batch.py --models cnn --lr 0.05
    mpiexec -n 2 python labs/02_tiny_batch.py --quick --out /tmp/lab2
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import numpy as np

from minidist.comm import Communicator
from minidist.data import spirals, synthetic_images
from minidist.optim import SGD
from minidist.nn import SyncBatchNorm
from minidist.parallel import Trainer, build_model, distributed_loader, wrap
from minidist.cost import syncbn_message_counts

CLAIM = ("BatchNorm backfires with a tiny batch; the batch should be much larger than the number "
         "of classes.")
NORMS = ("none", "batch", "sync", "layer")
MUCH_LARGER = 4  # "b much larger than K" read as b >= 4K


def parse_args(argv=None):
    p = common.lab_parser(__doc__)
    p.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    p.add_argument("--classes", type=common.int_list, default=[3, 8], help="K for the MLP (the CNN has 10)")
    p.add_argument("--batches", type=common.int_list, default=[2, 4, 16, 48], help="per-rank batches b (>= 2)")
    p.add_argument("--budget", type=int, default=3072, help="samples seen by every run")
    p.add_argument("--hidden", type=int, default=32, help="MLP width")
    p.add_argument("--lr", type=float, default=0.05)
    args = common.parse(p, argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(args.models) - {"mlp", "cnn"} or not args.models:
        p.error(f"--models takes mlp and/or cnn (got {args.models})")
    if args.tiny:
        args.models, args.classes, args.batches, args.budget, args.hidden = ["mlp"], [3], [2, 16], 128, 8
    elif args.quick:
        args.models, args.classes, args.batches, args.budget, args.hidden = ["mlp"], [3], [2, 12], 192, 16
    if min(args.batches) < 2:
        p.error(f"every per-rank batch must be >= 2: BatchNorm cannot normalise one sample (got {args.batches})")
    return args


def dataset(model, classes, seed, quick):
    if model == "mlp":
        X, y = spirals(40 if quick else 100, classes, seed=seed)
        Xt, yt = spirals(40, classes, seed=seed + 1000)
    else:
        X, y = synthetic_images(160 if quick else 600, size=16, seed=seed)
        Xt, yt = synthetic_images(200, size=16, seed=seed + 1000)
    return (X.astype(np.float64), y), (Xt.astype(np.float64), yt)


def make_net(args, model, classes, norm, comm, seed):
    sizes = ({"in_features": 2, "hidden": args.hidden, "out_features": classes} if model == "mlp"
             else {"in_channels": 1, "num_classes": 10, "image_size": 16, "channels": (4, 8)})
    return build_model(model, norm=norm, comm=comm if norm == "sync" else None, rng=seed,
                       dtype=np.float64, **sizes)


def run(args, comm, case, norm, distributed, data, test):
    """Train at the budget; returns (accuracy, net, syncbn bytes and messages sent per step)."""
    model_kind, classes, b, seed = case
    net = make_net(args, model_kind, classes, norm, comm, seed)
    model = wrap(net, "ddp", comm) if distributed else wrap(net, "local")
    opt = SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loader = distributed_loader(*data, b if distributed else b * comm.size, comm if distributed else None,
                                seed=seed, drop_last=True)
    steps = common.steps_for(args.budget, b * comm.size)
    trainer = Trainer(model, opt, comm=comm if distributed else None, progress=False)
    comm.ledger.reset()
    trainer.train_epoch(common.StepLoader(loader, steps))
    sync = comm.ledger.totals("syncbn")
    return trainer.evaluate(*test), net, (sync["bytes_sent"] / steps, sync["messages_sent"] / steps)


def closed_form(net, size, rank):
    got = [syncbn_message_counts(m.num_features, size, rank) for m in net.modules() if isinstance(m, SyncBatchNorm)]
    return sum(g["bytes_sent"] for g in got), sum(g["messages_sent"] for g in got)


def measure_case(args, comm, model_kind, classes, b) -> dict:
    row = {"model": model_kind, "classes": classes, "batch": b, "global_batch": b * comm.size,
           "steps": common.steps_for(args.budget, b * comm.size), "sync_diff": [], "layer_diff": []}
    for seed in args.seed_list:
        data, test = dataset(model_kind, classes, seed, args.quick)
        case = (model_kind, classes, b, seed)
        refs = {n: run(args, comm, case, n, False, data, test) for n in ("batch", "layer")}
        row.setdefault("acc_batch-global", []).append(refs["batch"][0])
        for norm in NORMS:
            acc, net, traffic = run(args, comm, case, norm, True, data, test)
            row.setdefault(f"acc_{norm}", []).append(acc)
            if norm in ("sync", "layer"):
                ref = refs["batch" if norm == "sync" else "layer"][1]
                diff = np.abs(common.flat_parameters(net) - common.flat_parameters(ref)).max()
                row[f"{norm}_diff"].append(common.max_over_ranks(comm, diff))
            if norm == "sync":
                row["syncbn_sent"], row["syncbn_closed_form"] = list(traffic), list(closed_form(net, comm.size, 0))
            elif norm == "batch":
                row["batchnorm_sent"] = list(traffic)
    return row


def conclude(rows, size) -> dict:
    checks = []
    for r in rows:
        where = f"{r['model']}, K={r['classes']}, b={r['batch']}"
        gap = np.array(r["acc_none"]) - np.array(r["acc_batch"])  # per seed: what adding BatchNorm loses
        m, s = common.mean_spread(gap)
        tiny = r["batch"] < MUCH_LARGER * r["classes"]
        if tiny:  # predicted: BatchNorm backfires, on every seed and beyond the spread
            ok = bool(np.all(gap > 0)) and m > s
            expect = "BatchNorm worse than no norm (it backfires)"
        else:  # predicted: it does not (no worse, within the spread or 0.02)
            ok = m <= max(s, 0.02)
            expect = "BatchNorm no worse than no norm"
        sync_gain = common.mean_spread(np.array(r["acc_sync"]) - np.array(r["acc_batch"]))
        checks.append(common.Check(
            f"b {'<' if tiny else '>='} {MUCH_LARGER}K: {expect}", ok,
            f"acc BN {common.pm(r['acc_batch'])}, none {common.pm(r['acc_none'])}, "
            f"SyncBN {common.pm(r['acc_sync'])}, LN {common.pm(r['acc_layer'])}; none - BN {m:+.3f} ± {s:.3f}, SyncBN - BN "
            f"{sync_gain[0]:+.3f} ± {sync_gain[1]:.3f}", when=where))
    if size > 1:
        worst_sync = max(max(r["sync_diff"]) for r in rows)
        worst_layer = max(max(r["layer_diff"]) for r in rows)
        traffic_ok = all(r["syncbn_sent"] == r["syncbn_closed_form"] and r["batchnorm_sent"] == [0, 0]
                         for r in rows)
        checks += [
            common.Check("SyncBatchNorm = BatchNorm on the global batch", worst_sync <= common.TOLERANCE,
                         f"max |param difference| {worst_sync:.1e}"),
            common.Check("LayerNorm under DDP = LayerNorm on the global batch", worst_layer <= common.TOLERANCE,
                         f"max |param difference| {worst_layer:.1e}"),
            common.Check("SyncBatchNorm's traffic is the closed form (BatchNorm sends none)", traffic_ok,
                         f"rank 0 sends {rows[0]['syncbn_sent'][0]:.0f} B in {rows[0]['syncbn_sent'][1]:.0f} "
                         f"messages per step ({rows[0]['model']}), closed form {rows[0]['syncbn_closed_form'][0]} B")]
    return common.verdict(checks)


def draw(rows):
    from plots import lines

    def fig(figure):
        groups = sorted({(r["model"], r["classes"]) for r in rows})
        figure.set_size_inches(4 * len(groups) + 1, 4)
        groups = sorted({(r["model"], r["classes"]) for r in rows})
        for i, (model, classes) in enumerate(groups):
            ax = figure.add_subplot(1, len(groups), i + 1)
            sub = [r for r in rows if (r["model"], r["classes"]) == (model, classes)]
            series = {n: ([r["batch"] for r in sub], [common.mean_spread(r[f"acc_{n}"])[0] for r in sub],
                          [common.mean_spread(r[f"acc_{n}"])[1] for r in sub]) for n in NORMS + ("batch-global",)}
            lines(ax, series, "per-rank batch b (samples)", "held-out accuracy (fraction)",
                  f"{model}, K={classes}", logx=2)
    return fig


def main(argv=None):
    args = parse_args(argv)
    comm = Communicator()
    rows = []
    for model_kind in args.models:
        for classes in (args.classes if model_kind == "mlp" else [10]):
            for b in args.batches:
                rows.append(measure_case(args, comm, model_kind, classes, b))
    result = conclude(rows, comm.size)
    table = [dict(r, **{f"{n}_pm": common.pm(r[f"acc_{n}"]) for n in NORMS + ("batch-global",)}) for r in rows]
    text = "\n".join([
        f"Lab 2: tiny batches, N={comm.size} ranks, {args.budget} samples seen per run (steps = budget / Nb), "
        f"lr {args.lr}, float64, held-out accuracy mean ± spread over {len(args.seed_list)} seeds", "",
        common.format_table(table, [
            ("model", "model", "{}"), ("classes", "K", "{}"), ("batch", "b/rank", "{}"),
            ("global_batch", "global", "{}"), ("steps", "steps", "{}"), ("none_pm", "no norm", "{}"),
            ("batch_pm", "BatchNorm", "{}"), ("sync_pm", "SyncBatchNorm", "{}"),
            ("batch-global_pm", "BN, 1 proc, global", "{}"), ("layer_pm", "LayerNorm", "{}")])])
    common.finish(comm, args, {"lab": "02_tiny_batch", "world_size": comm.size, "rows": rows, "verdict": result},
                  text, {"02_tiny_batch.png": draw(rows)})


if __name__ == "__main__":
    main()
