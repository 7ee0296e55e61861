"""Train the same model on the same global batches under several data-parallel strategies
and record, step by step and rank by rank, what each one computes and what it costs.

    mpiexec -n 4 python scripts/compare.py                                  # MLP on spirals, 20 steps
    mpiexec -n 4 python scripts/compare.py --model cnn --norm sync --steps 10
    mpiexec -n 4 python scripts/compare.py --norm batch                     # BatchNorm drifts, SyncBN does not
    mpiexec -n 3 python scripts/compare.py --batch 50 --strategies local,dp,dp-root,hub,ddp,ddp-fp16
    mpiexec -n 2 python scripts/compare.py --optimizer adam --out runs/adam.jsonl
    python scripts/compare.py --steps 5                                     # one rank works too

Every strategy starts from the same parameters (built from --seed on every rank; the
distributed ones also broadcast rank 0's) and sees the same global batch at each step:
"local" trains on the whole global batch on every rank (each rank keeps its own copy of
the reference, so the parameter difference needs no communication); the others give rank r
its contiguous rows (`local_shard`; uneven when N does not divide --batch, then gradients
are weighted by shard size). With --norm sync the reference uses BatchNorm on the global
batch, which is what SyncBatchNorm must reproduce.

Strategies: local, dp, dp-scatter (rank 0 scatters the batch), dp-root (loss on rank 0,
torch.nn.DataParallel's flow), hub, ddp, ddp-no-overlap, ddp-fp16.

Output (--out, JSONL; written by rank 0): a header record

    {"type": "header", "config": {...arguments...}, "world_size": N, "parameters": P,
     "strategies": [...], "shard_sizes": [...], "created": "..."}

then one record per strategy, step and rank:

    {"type": "step", "strategy", "step", "rank", "samples", "loss" (this rank's shard; null
     for dp-root off rank 0, where the global loss is), "accuracy" (shard, before the
     update), "max_param_diff" (max |param - local reference| after the step),
     "phases": {phase: {bytes_sent, bytes_received, messages_sent, messages_received,
     seconds}}, "comm_seconds", "compute_seconds" (step wall time minus communication),
     "wall_seconds", "memory": {parameters, gradients, optimizer, comm_buffers, comm_peak,
     total, peak}}

a summary table on rank 0's stdout, and (unless --no-report) a Markdown report with PNG
plots beside the run (`minidist.report`: runs/compare-report/report.md by default).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from time import perf_counter

import minidist  # noqa: F401  (first: under mpiexec it sets one BLAS thread per rank before NumPy loads)
import numpy as np  # noqa: E402

from minidist.comm import Communicator
from minidist.data import DataLoader, spirals, synthetic_images
from minidist.optim import SGD, Adam
from minidist.parallel import build_model, local_shard, shard_sizes, train_step, wrap
from minidist.cost.stepcost import describe
from minidist.report import write_report

VARIANTS = {  # name -> (strategy, wrap options)
    "local": ("local", {}),
    "dp": ("dp", {}),
    "dp-scatter": ("dp", {"scatter_inputs": True}),
    "dp-root": ("dp", {"loss_on_root": True}),
    "hub": ("hub", {}),
    "ddp": ("ddp", {}),
    "ddp-no-overlap": ("ddp", {"overlap": False}),
    "ddp-fp16": ("ddp", {"comm_hook": "fp16"}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--norm", choices=("none", "batch", "sync", "layer"), default="none")
    p.add_argument("--strategies", default="local,dp,hub,ddp",
                   help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64, help="global batch size")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, default=None, help="default: 0.1 (sgd), 1e-3 (adam)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--hidden", type=int, default=64, help="MLP width")
    p.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP bucket size")
    p.add_argument("--average", choices=("samples", "ranks"), default="samples")
    p.add_argument("--samples", type=int, default=1200, help="dataset size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compare.jsonl")
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="skip the Markdown report and plots (minidist report RUN.jsonl makes them later)")
    args = p.parse_args(argv)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in args.strategies if s not in VARIANTS]
    if unknown:
        p.error(f"unknown strategies {unknown}; choose from {list(VARIANTS)}")
    if "local" not in args.strategies:
        args.strategies.insert(0, "local")  # the reference every difference is measured against
    args.lr = (0.1 if args.optimizer == "sgd" else 1e-3) if args.lr is None else args.lr
    return args


def dataset(args):
    if args.model == "mlp":
        X, y = spirals(max(args.samples // 3, 1), 3, seed=args.seed)
    else:
        X, y = synthetic_images(args.samples, size=16, seed=args.seed)
    return X.astype(args.dtype), y


def global_batches(args, X, y):
    """--steps global batches, cycling through shuffled epochs (the same on every rank)."""
    batches, epoch = [], 0
    while len(batches) < args.steps:
        loader = DataLoader(X, y, batch_size=args.batch, shuffle=True, seed=args.seed, drop_last=True)
        loader.set_epoch(epoch)
        batches += [(xb.data, yb) for xb, yb in loader]
        epoch += 1
    return batches[: args.steps]


def make_model(args, comm, norm):
    sizes = ({"in_features": 2, "hidden": args.hidden, "out_features": 3} if args.model == "mlp"
             else {"in_channels": 1, "num_classes": 10, "image_size": 16})
    return build_model(args.model, norm=norm, comm=comm, rng=args.seed, dtype=np.dtype(args.dtype), **sizes)


def make_optimizer(args, params):
    if args.optimizer == "adam":
        return Adam(params, lr=args.lr)
    return SGD(params, lr=args.lr, momentum=args.momentum)


def flat_params(net):
    return np.concatenate([p.data.ravel() for p in net.parameters()])


def run(args, comm, variant, batches, reference):
    """Train one strategy; returns (this rank's step records, parameter snapshots)."""
    strategy, options = VARIANTS[variant]
    norm = "batch" if strategy == "local" and args.norm == "sync" else args.norm
    net = make_model(args, comm, norm)
    if strategy == "ddp":
        options = dict(options, bucket_cap_mb=args.bucket_cap_mb)
    if strategy != "local":
        options = dict(options, average=args.average)
    model = wrap(net, strategy, None if strategy == "local" else comm, **options)
    opt = make_optimizer(args, model.parameters())
    records, snapshots = [], []
    for step, (xg, yg) in enumerate(batches):
        x, y = (xg, yg) if strategy == "local" else local_shard((xg, yg), comm)
        comm.ledger.reset()
        t0 = perf_counter()
        # train_step takes the global batch where rank 0 scatters it or computes the loss
        x_in = xg if options.get("scatter_inputs") else x
        y_in = yg if options.get("scatter_inputs") or options.get("loss_on_root") else y
        out, y_local, loss = train_step(model, opt, x_in, y_in)
        y = y if y_local is None else y_local  # this rank's targets, for its accuracy
        wall = perf_counter() - t0
        phases = comm.ledger.by_phase() if strategy != "local" else {}
        comm_s = sum(ph["seconds"] for ph in phases.values())
        params = flat_params(net)
        snapshots.append(params)
        value = float(loss.item())
        records.append({
            "type": "step", "strategy": variant, "step": step, "rank": comm.rank, "samples": len(y),
            "loss": None if np.isnan(value) else value,
            "accuracy": float((out.data.argmax(axis=1) == y).mean()) if len(y) else None,
            "max_param_diff": float(np.abs(params - reference[step]).max()) if reference else 0.0,
            "phases": phases, "comm_seconds": comm_s, "compute_seconds": max(wall - comm_s, 0.0),
            "wall_seconds": wall, "memory": model.memory.as_dict()})
    return records, snapshots


def summarize(records, args, size):
    """Per strategy: the numbers a reader compares (rank 0's view of all ranks)."""
    rows = []
    for variant in args.strategies:
        mine = [r for r in records if r["strategy"] == variant]
        last = [r for r in mine if r["step"] == args.steps - 1]
        losses = [(r["loss"], r["samples"]) for r in last if r["loss"] is not None]
        if variant == "local":
            final = last[0]["loss"]
        elif VARIANTS[variant][1].get("loss_on_root"):
            final = losses[0][0]
        else:
            final = sum(v * n for v, n in losses) / max(sum(n for _, n in losses), 1)
        per_rank = lambda key, rank: np.mean([r[key] for r in mine if r["rank"] == rank])  # noqa: E731
        sent = [np.mean([sum(ph["bytes_sent"] for ph in r["phases"].values()) for r in mine if r["rank"] == k])
                for k in range(size)]
        msgs = [np.mean([sum(ph["messages_sent"] for ph in r["phases"].values()) for r in mine if r["rank"] == k])
                for k in range(size)]
        peak = [max(r["memory"]["peak"] for r in mine if r["rank"] == k) for k in range(size)]
        rows.append([variant, f"{final:.6f}", f"{max(r['max_param_diff'] for r in mine):.1e}",
                     _kib(sent[0]), _kib(max(sent[1:], default=0)), f"{msgs[0]:.0f}",
                     f"{1e3 * np.mean([per_rank('comm_seconds', k) for k in range(size)]):.2f}",
                     f"{1e3 * np.mean([per_rank('compute_seconds', k) for k in range(size)]):.2f}",
                     _kib(peak[0]), _kib(max(peak[1:], default=0))])
    head = ["strategy", "final loss", "max|dp|", "sent/step r0", "sent/step max(r>0)",
            "msgs/step r0", "comm ms", "compute ms", "peak mem r0", "peak mem max(r>0)"]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _kib(nbytes):
    return f"{nbytes / 1024:.1f} KiB"


def main(argv=None):
    args = parse_args(argv)
    comm = Communicator()
    with comm.fail_together():
        X, y = dataset(args)
        batches = global_batches(args, X, y)
        records, reference = [], None
        for variant in args.strategies:
            mine, snapshots = run(args, comm, variant, batches, reference)
            if variant == "local":
                reference = snapshots
            records += mine
        # reporting only: pickled gather outside every measured phase
        everything = comm.mpi.gather(records, root=0)
    if comm.rank != 0:
        return
    records = sorted((r for part in everything for r in part),
                     key=lambda r: (args.strategies.index(r["strategy"]), r["step"], r["rank"]))
    net = make_model(args, comm, "batch" if args.norm == "sync" else args.norm)
    shape = describe(net)
    header = {"type": "header", "config": vars(args), "world_size": comm.size,
              "parameters": int(flat_params(net).size),
              "model_shape": {"params": [[int(c), str(d)] for c, d in shape.params],
                              "buffers": [[int(c), str(d)] for c, d in shape.buffers]},
              "strategies": args.strategies, "shard_sizes": shard_sizes(args.batch, comm.size).tolist(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        for record in [header] + records:
            f.write(json.dumps(record) + "\n")
    print(f"{args.model} norm={args.norm} N={comm.size} batch={args.batch} steps={args.steps} "
          f"dtype={args.dtype} optimizer={args.optimizer} -> {args.out}")
    print(summarize(records, args, comm.size))
    if args.report:
        print(f"report: {write_report(args.out)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
