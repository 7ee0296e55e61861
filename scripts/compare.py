"""Train the same model on the same global batches under several data-parallel strategies
and record, step by step and rank by rank, what each one computes and what it costs.

    mpiexec -n 4 python scripts/compare.py                                  # MLP (265 k params) on spirals, 20 steps
    mpiexec -n 4 python scripts/compare.py --model cnn --norm sync --steps 10
    mpiexec -n 4 python scripts/compare.py --norm batch                     # BatchNorm drifts, SyncBN does not
    mpiexec -n 3 python scripts/compare.py --batch 50 --strategies local,dp,dp-root,hub,ddp,ddp-fp16
    mpiexec -n 2 python scripts/compare.py --optimizer adam --out runs/adam.jsonl
    python scripts/compare.py --steps 5                                     # one rank works too
    mpiexec -n 2 python scripts/compare.py --steps 3 --checkpoint runs/ck    # then, in a new job:
    mpiexec -n 2 python scripts/compare.py --steps 3 --resume runs/ck       # steps 3..5, bitwise as 0..5

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
     "clock": {offsets and their error bound, docs/timing.md}, "cores": C,
     "calibration": {this machine's profile, spread, verdict; null with a named --profile},
     "strategies": [...], "shard_sizes": [...], "created": "..."}

then one record per strategy, step and rank:

    {"type": "step", "strategy", "step", "rank", "samples", "loss" (this rank's shard; null
     for dp-root off rank 0, where the global loss is), "accuracy" (shard, before the
     update), "max_param_diff" (max |param - local reference| after the step),
     "phases": {phase: {bytes_sent, bytes_received, messages_sent, messages_received,
     seconds, wait_seconds}}, "comm_seconds", "compute_seconds" (step wall time minus
     communication), "wait_seconds" (of the collective calls' time, waiting for the last
     rank to enter), "call_seconds" (time inside collective calls), "wall_seconds",
     "memory": {parameters, gradients, optimizer, comm_buffers, comm_peak, total, peak}}

a summary table on rank 0's stdout, trace.json (Chrome trace events: one process per
strategy, one track per rank) and (unless --no-report) a Markdown report with PNG plots,
both beside the run (runs/compare-report/ by default). Time, clock and calibration:
docs/timing.md.
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

from minidist.atomic import write_lines
from minidist.checkpoint import load_checkpoint, save_checkpoint
from minidist.comm import Communicator
from minidist.comm.clock import synchronize_clocks
from minidist.comm.timeline import Timeline, trace_method
from minidist.data import DataLoader, spirals, synthetic_images
from minidist.optim import SGD, Adam
from minidist.parallel import build_model, local_shard, shard_sizes, train_step, wrap
from minidist.cost.machine import job_cores, machine_profile
from minidist.cost.profiles import get_profile, load_profile
from minidist.cost.stepcost import describe
from minidist.report import write_report
from minidist.report.trace import trace_path, write_trace

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
    p.add_argument("--hidden", type=int, default=512,
                   help="MLP width (512: 265 k parameters, 2 MiB of float64 gradients: enough bytes "
                        "for dp's rank-0 hot spot to show against DDP's even load)")
    p.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP bucket size")
    p.add_argument("--average", choices=("samples", "ranks"), default="samples")
    p.add_argument("--samples", type=int, default=1200, help="dataset size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compare.jsonl")
    p.add_argument("--profile", default=os.environ.get("MINIDIST_PROFILE") or "calibrated",
                   help="cost profile for measured-beside-predicted: 'calibrated' (measured here in "
                        "< 3 s, cached per host and rank count; the default unless $MINIDIST_PROFILE "
                        "names another), a name (shm, ib-hdr, ...) or a JSON file from `minidist calibrate`")
    p.add_argument("--recalibrate", action="store_true", help="measure the profile afresh, ignoring the cache")
    p.add_argument("--checkpoint", metavar="DIR", default=None,
                   help="after training, save each strategy's checkpoint to DIR/<strategy>.npz")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="start each strategy from DIR/<strategy>.npz (a --checkpoint of an earlier run "
                        "with the same options) and train --steps more")
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
    args.cost_profile = None  # the Profile for a named or saved one; None: calibrated here
    if args.profile != "calibrated":
        try:
            args.cost_profile = (load_profile(args.profile) if args.profile.endswith(".json")
                                 else get_profile(args.profile))
        except (OSError, ValueError) as exc:
            p.error(f"--profile {args.profile}: {exc}")
    missing = [v for v in args.strategies
               if args.resume and not os.path.isfile(os.path.join(args.resume, f"{v}.npz"))]
    if missing:
        p.error(f"--resume {args.resume}: no checkpoint for {missing}; expected {args.resume}/<strategy>.npz "
                "for every strategy, written by a run with --checkpoint")
    return args


def dataset(args):
    if args.model == "mlp":
        X, y = spirals(max(args.samples // 3, 1), 3, seed=args.seed)
    else:
        X, y = synthetic_images(args.samples, size=16, seed=args.seed)
    return X.astype(args.dtype), y


def global_batches(args, X, y, start=0):
    """The global batches of steps start..start+steps-1, cycling through shuffled epochs
    (the same on every rank)."""
    batches, epoch = [], 0
    while len(batches) < start + args.steps:
        loader = DataLoader(X, y, batch_size=args.batch, shuffle=True, seed=args.seed, drop_last=True)
        loader.set_epoch(epoch)
        batches += [(xb.data, yb) for xb, yb in loader]
        epoch += 1
    return batches[start: start + args.steps]


def resume_or_start(args, variant, model, opt) -> int:
    """The first step: 0, or with --resume the step saved in DIR/<variant>.npz, whose model,
    optimizer and RNG states are loaded (on every rank, from the same file)."""
    if args.resume is None:
        return 0
    return load_checkpoint(os.path.join(args.resume, f"{variant}.npz"), model, opt)["step"]


def save_if_asked(args, comm, variant, model, opt, step) -> None:
    """With --checkpoint, save DIR/<variant>.npz (rank 0 writes; "local" runs on every
    rank with no communicator, so only rank 0 calls it there)."""
    if args.checkpoint is not None and (VARIANTS[variant][0] != "local" or comm.rank == 0):
        save_checkpoint(os.path.join(args.checkpoint, f"{variant}.npz"), model, opt, step=step)


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


def run(args, comm, variant, X, y, reference):
    """Train one strategy; returns (this rank's step records, parameter snapshots)."""
    strategy, options = VARIANTS[variant]
    norm = "batch" if strategy == "local" and args.norm == "sync" else args.norm
    net = make_model(args, comm, norm)
    if strategy == "ddp":
        options = dict(options, bucket_cap_mb=args.bucket_cap_mb)
    if strategy != "local":
        options = dict(options, average=args.average)
    timeline = comm.timeline  # local too: its spans are the reference's compute
    if timeline is not None:
        timeline.step = "setup"
    model = wrap(net, strategy, None if strategy == "local" else comm, **options)
    opt = make_optimizer(args, model.parameters())
    start = resume_or_start(args, variant, model, opt)
    if timeline is not None:
        timeline.settle(comm.mpi)  # the wrap's own collectives (verify, init-broadcast)
        trace_method(opt, "step", timeline, "optimizer")
    records, snapshots = [], []
    for i, (xg, yg) in enumerate(global_batches(args, X, y, start)):
        step = start + i
        x, y = (xg, yg) if strategy == "local" else local_shard((xg, yg), comm)
        comm.ledger.reset()
        if timeline is not None:
            timeline.step = step
        t0 = perf_counter()
        # train_step takes the global batch where rank 0 scatters it or computes the loss
        x_in = xg if options.get("scatter_inputs") else x
        y_in = yg if options.get("scatter_inputs") or options.get("loss_on_root") else y
        out, y_local, loss = train_step(model, opt, x_in, y_in, timeline=timeline)
        y = y if y_local is None else y_local  # this rank's targets, for its accuracy
        wall = perf_counter() - t0
        calls = timeline.settle(comm.mpi, comm.ledger if strategy != "local" else None) \
            if timeline is not None else []
        # (bookkeeping after the step: enter times exchanged, waits into the ledger)
        phases = comm.ledger.by_phase() if strategy != "local" else {}
        comm_s = sum(ph["seconds"] for ph in phases.values())
        params = flat_params(net)
        snapshots.append(params)
        value = float(loss.item())
        records.append({
            "type": "step", "strategy": variant, "step": step, "rank": comm.rank, "samples": len(y),
            "loss": None if np.isnan(value) else value,
            "accuracy": float((out.data.argmax(axis=1) == y).mean()) if len(y) else None,
            "max_param_diff": float(np.abs(params - reference[i]).max()) if reference else 0.0,
            "phases": phases, "comm_seconds": comm_s, "compute_seconds": max(wall - comm_s, 0.0),
            "wait_seconds": sum(ph["wait_seconds"] for ph in phases.values()),
            "call_seconds": sum(c.duration for c in calls),
            "wall_seconds": wall, "memory": model.memory.as_dict()})
    save_if_asked(args, comm, variant, model, opt, start + args.steps)
    return records, snapshots


def run_all(args, comm, X, y, timeline):
    """Every strategy in turn, `timeline` recording; (step records, spans) of this rank."""
    comm.timeline = timeline
    records, reference, spans = [], None, []
    for variant in args.strategies:
        mine, snapshots = run(args, comm, variant, X, y, reference)
        if variant == "local":
            reference = snapshots
        records += mine
        spans.append({"strategy": variant, "rank": comm.rank, "events": timeline.events})
        timeline.events = []
    comm.timeline = None
    return records, spans


def summarize(records, args, size):
    """Per strategy: the numbers a reader compares (rank 0's view of all ranks)."""
    rows = []
    for variant in args.strategies:
        mine = [r for r in records if r["strategy"] == variant]
        final_step = max(r["step"] for r in mine)  # --resume: steps go on from the checkpoint's
        last = [r for r in mine if r["step"] == final_step]
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
                     f"{1e3 * np.mean([per_rank('wait_seconds', k) for k in range(size)]):.2f}",
                     f"{1e3 * np.mean([per_rank('compute_seconds', k) for k in range(size)]):.2f}",
                     _kib(peak[0]), _kib(max(peak[1:], default=0))])
    head = ["strategy", "final loss", "max|dp|", "sent/step r0", "sent/step max(r>0)",
            "msgs/step r0", "comm ms", "of it wait", "compute ms", "peak mem r0", "peak mem max(r>0)"]
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
        clock = synchronize_clocks(comm.mpi)  # bookkeeping, charged to no strategy
        cores = job_cores(comm.mpi)  # ranks outnumbering cores changes what time means
        calibration = (machine_profile(comm, refresh=args.recalibrate)
                       if args.profile == "calibrated" and comm.size > 1 else None)
        records, spans = run_all(args, comm, X, y, Timeline(clock, comm.rank))
        # reporting only: pickled gathers outside every measured phase
        everything = comm.mpi.gather(records, root=0)
        spans = comm.mpi.gather(spans, root=0)
    if comm.rank != 0:
        return
    records = sorted((r for part in everything for r in part),
                     key=lambda r: (args.strategies.index(r["strategy"]), r["step"], r["rank"]))
    net = make_model(args, comm, "batch" if args.norm == "sync" else args.norm)
    shape = describe(net)
    config = {k: v for k, v in vars(args).items() if k != "cost_profile"}
    header = {"type": "header", "config": config, "world_size": comm.size,
              "parameters": int(flat_params(net).size),
              "model_shape": {"params": [[int(c), str(d)] for c, d in shape.params],
                              "buffers": [[int(c), str(d)] for c, d in shape.buffers]},
              "clock": clock.header(), "cores": cores, "calibration": calibration,
              "strategies": args.strategies, "shard_sizes": shard_sizes(args.batch, comm.size).tolist(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_lines(args.out, (json.dumps(record) for record in [header] + records))  # atomically
    print(f"{args.model} norm={args.norm} N={comm.size} batch={args.batch} steps={args.steps} "
          f"dtype={args.dtype} optimizer={args.optimizer} -> {args.out}")
    print(summarize(records, args, comm.size))
    if calibration is not None:
        print(f"cost profile calibrated here ({'cached' if calibration['cached'] else 'measured'}, "
              f"{calibration['path']}): {calibration['verdict']}")
    trace = write_trace(trace_path(args.out), [p for part in spans for p in part], args.strategies,
                        clock.header())
    print(f"trace: {trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    if args.report:
        print(f"report: {write_report(args.out, profile=args.cost_profile)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
