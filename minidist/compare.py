"""Train the same model on the same global batches under several data-parallel strategies
and record, step by step and rank by rank, what each one computes and what it costs.

    minidist compare -n 4                                   # MLP on spirals, 20 steps
    minidist compare -n 4 --model cnn --norm sync --steps 10
    mpiexec -n 4 python scripts/compare.py --out runs/a.jsonl   # the same code, launched by hand

Every strategy starts from the same parameters (built from --seed on every rank) and sees
the same global batch at each step: "local" trains on the whole global batch on every rank
(the reference); the others give rank r its contiguous rows (uneven shards are weighted by
size). The run file's layout (a header, then one record per strategy, step and rank) is
described in scripts/compare.py and read by `minidist.report.load_run`.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from datetime import datetime, timezone
from time import perf_counter

import minidist  # noqa: F401  (first: under mpiexec it sets one BLAS thread per rank before NumPy loads)
import numpy as np  # noqa: E402

from .cli_errors import ConfigError, Parser, fail  # noqa: E402
from .mpich import settings_in_effect  # noqa: E402
from .compare_options import VARIANTS, add_arguments, available_cores, run_paths, validate, warn_about  # noqa: E402


def parse_args(argv=None):
    p = Parser(prog="scripts/compare.py", description=__doc__)
    add_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks (also MINIDIST_DEBUG=1)")
    p.add_argument("--out", default=None,
                   help="a run folder (run.jsonl + report), or RUN.jsonl (report in RUN-report/); "
                        "default: a new runs/<timestamp>/")
    args = p.parse_args(argv)
    validate(args)
    return args


def dataset(args):
    from .data import spirals, synthetic_images

    if args.model == "mlp":
        X, y = spirals(args.samples // 3, 3, seed=args.seed)
    else:
        X, y = synthetic_images(args.samples, size=16, seed=args.seed)
    return X.astype(args.dtype), y


def global_batches(args, X, y, start=0):
    """The global batches of steps start..start+steps-1, cycling through shuffled epochs
    (the same on every rank); `validate` made sure one epoch holds at least one batch."""
    from .data import DataLoader

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
    from .checkpoint import load_checkpoint

    if args.resume is None:
        return 0
    return load_checkpoint(os.path.join(args.resume, f"{variant}.npz"), model, opt)["step"]


def save_if_asked(args, comm, variant, model, opt, step) -> None:
    """With --checkpoint, save DIR/<variant>.npz (rank 0 writes; "local" runs on every
    rank with no communicator, so only rank 0 calls it there)."""
    from .checkpoint import save_checkpoint

    if args.checkpoint is not None and (VARIANTS[variant][0] != "local" or comm.rank == 0):
        save_checkpoint(os.path.join(args.checkpoint, f"{variant}.npz"), model, opt, step=step)


def make_model(args, comm, norm):
    from .parallel import build_model

    sizes = ({"in_features": 2, "hidden": args.hidden, "out_features": 3} if args.model == "mlp"
             else {"in_channels": 1, "num_classes": 10, "image_size": 16})
    return build_model(args.model, norm=norm, comm=comm, rng=args.seed, dtype=np.dtype(args.dtype), **sizes)


def make_optimizer(args, params):
    from .optim import SGD, Adam

    if args.optimizer == "adam":
        return Adam(params, lr=args.lr)
    return SGD(params, lr=args.lr, momentum=args.momentum)


def flat_params(net):
    return np.concatenate([p.data.ravel() for p in net.parameters()])


def _wrapped(args, comm, variant):
    from .parallel import wrap

    strategy, options = VARIANTS[variant]
    norm = "batch" if strategy == "local" and args.norm == "sync" else args.norm
    net = make_model(args, comm, norm)
    if strategy == "ddp":
        options = dict(options, bucket_cap_mb=args.bucket_cap_mb)
    if strategy != "local":  # --average, unless the variant fixes it (ddp-fp16 averages over ranks)
        options = {"average": args.average, **options}
    return net, wrap(net, strategy, None if strategy == "local" else comm, **options), options


def run(args, comm, variant, X, y, reference):
    """Train one strategy; returns (this rank's step records, parameter snapshots)."""
    from .comm.timeline import trace_method
    from .parallel import local_shard, train_step

    local = VARIANTS[variant][0] == "local"
    timeline = comm.timeline  # spans and collective calls on the common clock (docs/timing.md)
    timeline.step = "setup"
    net, model, options = _wrapped(args, comm, variant)
    opt = make_optimizer(args, model.parameters())
    start = resume_or_start(args, variant, model, opt)
    timeline.settle(comm.mpi)  # the wrap's own collectives (verify, init-broadcast)
    trace_method(opt, "step", timeline, "optimizer")
    records, snapshots = [], []
    for i, (xg, yg) in enumerate(global_batches(args, X, y, start)):
        step = start + i
        x, y = (xg, yg) if local else local_shard((xg, yg), comm)
        comm.ledger.reset()
        timeline.step = step
        t0 = perf_counter()
        # train_step takes the global batch where rank 0 scatters it or computes the loss
        x_in = xg if options.get("scatter_inputs") else x
        y_in = yg if options.get("scatter_inputs") or options.get("loss_on_root") else y
        out, y_local, loss = train_step(model, opt, x_in, y_in, timeline=timeline)
        y = y if y_local is None else y_local  # this rank's targets, for its accuracy
        wall = perf_counter() - t0
        calls = timeline.settle(comm.mpi, None if local else comm.ledger)  # bookkeeping: waits
        phases = {} if local else comm.ledger.by_phase()
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
            "call_seconds": sum(c.duration for c in calls), "wall_seconds": wall, "memory": model.memory.as_dict()})
    save_if_asked(args, comm, variant, model, opt, start + args.steps)
    return records, snapshots


def environment(comm) -> dict:
    """What the report's top shows: MPI library and the transport settings minidist's job ran
    with (mpich.py), ranks and cores, Python and NumPy."""
    mpi = importlib.import_module(type(comm.mpi).__module__)  # the MPI binding comm already loaded
    library = " ".join(mpi.Get_library_version().split())[:160]
    return {"mpi_library": library, "mpi_standard": ".".join(map(str, mpi.Get_version())),
            "mpi_settings": settings_in_effect(library), "ranks": comm.size,
            "cores": available_cores(), "host": platform.node(),
            "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform(terse=True)}


def header_record(args, comm, timing=None) -> dict:
    from .parallel import shard_sizes
    from .cost.stepcost import describe

    net = make_model(args, comm, "batch" if args.norm == "sync" else args.norm)
    shape = describe(net)
    config = {k: v for k, v in vars(args).items() if k not in ("profile_obj", "debug", "clock")}
    return {"type": "header", "config": config, "world_size": comm.size,
            "parameters": int(flat_params(net).size),
            "model_shape": {"params": [[int(c), str(d)] for c, d in shape.params],
                            "buffers": [[int(c), str(d)] for c, d in shape.buffers]},
            "strategies": args.strategies, "shard_sizes": shard_sizes(args.batch, comm.size).tolist(),
            "profile": args.profile_obj.to_dict(), "environment": environment(comm), **(timing or {}),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def train_all(args, comm):
    """Every strategy in turn, a timeline recording; rank 0 gets all ranks' (records, spans)
    (None elsewhere)."""
    from .comm.timeline import Timeline

    X, y = dataset(args)
    timeline = comm.timeline = Timeline(args.clock, comm.rank)
    records, reference, spans = [], None, []
    for variant in args.strategies:
        mine, snapshots = run(args, comm, variant, X, y, reference)
        if variant == "local":
            reference = snapshots
        records += mine
        spans.append({"strategy": variant, "rank": comm.rank, "events": timeline.events})
        timeline.events = []
    comm.timeline = None
    # reporting only: pickled gathers outside every measured phase
    everything, spans = comm.mpi.gather(records, root=0), comm.mpi.gather(spans, root=0)
    if everything is None:
        return None
    return (sorted((r for part in everything for r in part),
                   key=lambda r: (args.strategies.index(r["strategy"]), r["step"], r["rank"])),
            [p for part in spans for p in part])


def time_setup(args, comm) -> dict:
    """Collective, charged to no strategy: the common clock, the job's cores, and (unless
    --profile or $MINIDIST_PROFILE names one) this machine's calibrated profile, which also
    sets the thresholds of ``allreduce(algorithm="auto")`` (`minidist.cost.use_profile`)."""
    from .comm.clock import synchronize_clocks
    from .cost import use_profile
    from .cost.machine import job_cores, machine_profile, profile_of

    args.clock = synchronize_clocks(comm.mpi)
    calibration = None
    if args.profile is None and not os.environ.get("MINIDIST_PROFILE") and comm.size > 1:
        calibration = machine_profile(comm, refresh=args.recalibrate)
        args.profile_obj = profile_of(calibration)
    use_profile(args.profile_obj)  # the same on every rank: allreduce(algorithm="auto") follows it
    return {"clock": args.clock.header(), "cores": job_cores(comm.mpi), "calibration": calibration}


def save_and_report(args, comm, records, spans, timing) -> None:
    """Rank 0: the run file, the summary table, the report, and where they are."""
    from .atomic import write_lines
    from .report import write_report
    from .report.console import comparison_table
    from .report.trace import write_trace

    run_file, report_dir = run_paths(args.out)
    header = header_record(args, comm, timing)
    write_lines(run_file, (json.dumps(r) for r in [header] + records))  # atomically
    print(f"{args.model} norm={args.norm} N={comm.size} batch={args.batch} steps={args.steps} "
          f"dtype={args.dtype} optimizer={args.optimizer} -> {run_file}")
    print(comparison_table(records, args.strategies, comm.size))
    if timing["calibration"] is not None:
        cal = timing["calibration"]
        print(f"cost profile calibrated here ({'cached' if cal['cached'] else 'measured'}, {cal['path']}): "
              f"{cal['verdict']}")
    trace = write_trace(report_dir / "trace.json", spans, args.strategies, timing["clock"])
    print(f"trace: {trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    if args.report:
        report = write_report(run_file, report_dir, profile=args.profile_obj)
        print(f"report: {report} (and {report.with_suffix('.html').name} beside it)")
    if run_file.parent == report_dir:
        print(f"run folder: {report_dir}")
    else:  # --out X.jsonl: the run file, and its report in X-report/
        print(f"run file: {run_file}; report folder: {report_dir}")
    sys.stdout.flush()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
    except ConfigError as exc:
        return fail(exc, "--debug" in argv)
    from .comm import Communicator

    comm = Communicator()
    if comm.rank == 0:
        warn_about(args, comm.size)
    timing = time_setup(args, comm)  # an error on any rank ends the job (comm/failstop.py)
    result = train_all(args, comm)
    if comm.rank == 0:
        save_and_report(args, comm, *result, timing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
