"""Weak scaling of every strategy: a communication-heavy MLP (10 M parameters) and the
small CNN, the same samples per rank at every N.

    PYTHONPATH=$PWD mpirun --allow-run-as-root --oversubscribe -n 16 python3 scripts/bench_scaling.py
    mpiexec -n 4 python scripts/bench_scaling.py --quick          # one N: this job's size
    python scripts/bench_scaling.py --ranks 1 2 4                  # launches one job per N

Per model and strategy (ddp with overlap on and off, dp, hub), one job of N ranks reports:
step time (the slowest rank's median of --steps >= 5 steps, a barrier before each),
communication fraction (the ledger's seconds in communication, waits included / step
time, rank 0),
weak-scaling efficiency (the same model stepped without communication, in the same job
on every rank at once / the strategy's step: what synchronising costs at this N; with
--ranks, also T(N=1) / T(N)), measured (waits included) vs predicted communication seconds
(minidist.cost stepcost with --profile, $MINIDIST_PROFILE, or else this machine's
calibration for the job's N, as compare.py's: cost.machine), and bytes sent per rank per step
(the ledger; rank 0 and the largest rank). Runs with more ranks than cores are labelled.
glibc keeps freed memory at every N, N = 1 included (minidist's MPI default applies only
from 2 ranks; MINIDIST_MALLOC=default turns it off everywhere).
numpy, mpi4py and matplotlib only (--plot); no torch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
RUNS = [("ddp", {"overlap": True}, "ddp"), ("ddp", {"overlap": False}, "ddp-no-overlap"),
        ("dp", {}, "dp"), ("hub", {}, "hub")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["mlp10m", "cnn"], choices=["mlp10m", "cnn"])
    p.add_argument("--steps", type=int, default=7, help="timed steps (>= 5)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="samples per rank")
    p.add_argument("--profile", help="a cost profile (JSON) for the predictions")
    p.add_argument("--ranks", nargs="+", type=int, help="launch one mpiexec job per N (else: this job's N)")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--plot", help="write a PNG of step time and efficiency per N here (needs --ranks)")
    p.add_argument("--quick", action="store_true", help="5 steps, 1 warm-up, batch 8")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.batch = 5, 1, 8
    if args.steps < 5:
        p.error(f"--steps must be >= 5 for a median worth reading (got {args.steps})")
    return args


def build(name):
    import numpy as np
    from minidist import nn

    rng = np.random.default_rng(0)
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, rng=rng), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 14 * 14, 10, rng=rng))
    return nn.Sequential(nn.Linear(784, 2048, rng=rng), nn.ReLU(), nn.Linear(2048, 2048, rng=rng), nn.ReLU(),
                         nn.Linear(2048, 2048, rng=rng), nn.ReLU(), nn.Linear(2048, 10, rng=rng))


def timed(comm, step, args):
    """The slowest rank's median step time, a barrier before each step."""
    import numpy as np

    times = []
    for i in range(args.warmup + args.steps):
        comm.mpi.Barrier()
        t0 = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        if i == args.warmup - 1:
            comm.ledger.reset()  # count the timed steps only
    return comm.mpi.allreduce(float(np.median(times)), op=max_op())


def max_op():
    from mpi4py import MPI

    return MPI.MAX


def make_step(model, opt, x, y, wrapped):
    from minidist.nn import functional as F

    def step():
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        model.step(opt) if wrapped else opt.step()

    return step


def one_model(comm, name, args, profile):
    """Rows for every strategy of `name` at this job's N."""
    import numpy as np

    import minidist
    from minidist.cost.stepcost import describe, predict_step
    from minidist.optim import SGD
    from minidist.parallel import wrap

    rng = np.random.default_rng(100 + comm.rank)
    shape = (args.batch, 1, 28, 28) if name == "cnn" else (args.batch, 784)
    x, y = minidist.Tensor(rng.standard_normal(shape).astype(np.float32)), rng.integers(0, 10, args.batch)
    net = build(name)
    rows, cores = [], os.cpu_count() or 1
    for strategy, options, label in RUNS:
        model = wrap(build(name), strategy, comm, **options)
        step_s = timed(comm, make_step(model, SGD(model.parameters(), lr=0.01), x, y, True), args)
        totals = comm.ledger.totals()
        sent = comm.mpi.allreduce(totals["bytes_sent"], op=max_op()) / args.steps
        predicted = predict_step(strategy, comm.size, describe(build(name)), profile=profile)["seconds"]
        comm_s = totals["seconds"] / args.steps
        rows.append({"model": name, "strategy": label, "n": comm.size, "oversubscribed": comm.size > cores,
                     "params": sum(p.data.size for p in net.parameters()), "step_s": step_s,
                     "comm_s": comm_s,
                     "comm_fraction": comm_s / step_s, "predicted_comm_s": predicted,
                     "measured_over_predicted": comm_s / predicted if predicted else None,
                     "bytes_sent_rank0": totals["bytes_sent"] / args.steps, "bytes_sent_max": sent})
    alone = timed(comm, make_step(net, SGD(net.parameters(), lr=0.01), x, y, False), args)  # warm by now
    for r in rows:
        r.update(alone_s=alone, efficiency=alone / r["step_s"])
    return rows


def job(args):
    """Inside an MPI job (any N): every model and strategy, a table on rank 0."""
    import minidist  # noqa: F401  (one BLAS thread per rank, malloc default)
    from minidist import allocator
    from minidist.comm import Communicator
    from minidist.cost import default_profile, load_profile

    malloc = allocator.wanted() and allocator.keep_freed_memory()  # N=1 too
    comm = Communicator()
    profile = load_profile(args.profile) if args.profile else default_profile()
    if profile is None:  # this machine, calibrated for this N (cached per host and N), as compare.py
        from minidist.cost.machine import machine_profile, profile_of
        profile = profile_of(machine_profile(comm)) if comm.size > 1 else "shm"  # N=1 predicts nothing
    rows = [row for name in args.models for row in one_model(comm, name, args, profile)]
    if comm.rank == 0:
        pname = getattr(profile, "name", profile)
        print(f"# N={comm.size}, {os.cpu_count()} cores{' (ranks > cores: OVERSUBSCRIBED)' if comm.size > (os.cpu_count() or 1) else ''}, "
              f"batch {args.batch}/rank, {args.steps} timed steps, profile {pname}, 1 BLAS thread per rank, "
              f"malloc {'keeps freed memory' if malloc else 'glibc default'}", flush=True)
        for r in rows:
            print(format_row(r), flush=True)
        print("JSON " + json.dumps(rows), flush=True)
    return rows


def format_row(r):
    ratio = f"{r['measured_over_predicted']:6.2f}" if r["measured_over_predicted"] else "     -"
    return (f"{r['model']:7s} N={r['n']:<3d}{'*' if r['oversubscribed'] else ' '} {r['strategy']:15s} "
            f"step {r['step_s'] * 1e3:9.2f} ms  comm {100 * r['comm_fraction']:5.1f}%  eff {r['efficiency']:5.2f}  "
            f"comm meas/pred {r['comm_s'] * 1e3:8.2f}/{r['predicted_comm_s'] * 1e3:8.2f} ms ({ratio})  "
            f"sent/rank {r['bytes_sent_max'] / 2**20:8.2f} MiB")


def launch_all(args):
    """One mpiexec job per N; rows of all, with T(1)/T(N) where N=1 ran."""
    from benchutil import mpiexec_command, one_thread_env

    rows = []
    for n in args.ranks:
        cmd = mpiexec_command(n) + [sys.executable, os.path.abspath(__file__), "--steps", str(args.steps),
                                    "--warmup", str(args.warmup), "--batch", str(args.batch),
                                    "--models", *args.models] + (["--profile", args.profile] if args.profile else [])
        env = {**os.environ, **one_thread_env(), "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"N={n} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        print("\n".join(line for line in proc.stdout.splitlines() if not line.startswith("JSON ")), flush=True)
        rows += json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("JSON "))[5:])
    base = {(r["model"], r["strategy"]): r["step_s"] for r in rows if r["n"] == 1}
    for r in rows:
        if (r["model"], r["strategy"]) in base:
            r["efficiency_vs_n1"] = base[(r["model"], r["strategy"])] / r["step_s"]
    if base:
        print("# weak-scaling efficiency T(N=1) / T(N):")
        for r in rows:
            print(f"  {r['model']:7s} {r['strategy']:15s} N={r['n']:<3d} {r.get('efficiency_vs_n1', float('nan')):5.2f}")
    return rows


STYLE = {"ddp": ("C0", "o"), "ddp-no-overlap": ("C1", "s"), "dp": ("C2", "^"), "hub": ("C3", "D")}


def plot(rows, path):
    """Step time and efficiency against N, one colour and marker per strategy, one column
    per model, from the same rows as the printed table; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 7), squeeze=False)
    for col, model in enumerate(models):
        for label, (color, marker) in STYLE.items():
            mine = sorted((r for r in rows if r["model"] == model and r["strategy"] == label), key=lambda r: r["n"])
            ns = [r["n"] for r in mine]
            axes[0][col].plot(ns, [r["step_s"] * 1e3 for r in mine], color=color, marker=marker, label=label)
            axes[1][col].plot(ns, [r["efficiency"] for r in mine], color=color, marker=marker, label=label)
        axes[0][col].set(title=model, xlabel="ranks N", ylabel="step time (ms)")
        axes[1][col].set(xlabel="ranks N", ylabel="efficiency (no-comm step / step)")
        ticks = sorted({r["n"] for r in rows})
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xticks(ticks)
        axes[0][col].legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    in_job = int(os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or 0) > 0
    rows = launch_all(args) if args.ranks and not in_job else job(args)
    if args.plot and args.ranks and not in_job:
        plot(rows, args.plot)
    if args.json and rows is not None:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
