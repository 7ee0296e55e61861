"""Measure, per number of ranks N, the message size from which the ring all-reduce beats
recursive doubling here: a table in the shape of minidist.comm.auto's, for
`allreduce(algorithm="auto")` to take its thresholds from (`auto.set_auto_table`).

    python scripts/bench_crossover.py                 # N = 2, 3, 4; 64 B .. 4 MiB
    python scripts/bench_crossover.py --ranks 2 4 --max-bytes 1M --json crossover.json
    python scripts/bench_crossover.py --quick

Each N is one mpiexec job. For every power-of-two size (float32 sum), recursive doubling
and the ring alternate in --passes passes of --iters iterations, a barrier before each
(outside the timed region); a method's time is the slowest rank's median. The crossover
is the smallest size from which the ring is at least as fast as recursive doubling at
that size and every larger one measured ("none" when the ring never wins for good). On a
shared machine the crossover moves with the load: run it quiet, and more than once.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from time import perf_counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]


def parse_args(argv=None):
    from benchutil import parse_bytes

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--min-bytes", type=parse_bytes, default=64)
    p.add_argument("--max-bytes", type=parse_bytes, default=4 << 20)
    p.add_argument("--iters", type=int, default=30, help="timed iterations per method, size and pass")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--json", help="write the table here")
    p.add_argument("--quick", action="store_true", help="64 B .. 256 KiB, 10 iterations, 2 passes")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.max_bytes, args.iters, args.passes = min(args.max_bytes, 256 << 10), 10, 2
    return args


def worker(args):
    """Inside the mpiexec job: per size, the slowest rank's median of each method."""
    import minidist  # noqa: F401 first: a minidist job's MPI settings (minidist/mpich.py) apply
    import numpy as np
    from mpi4py import MPI

    from minidist.comm import Communicator, recursive_doubling_allreduce, ring_allreduce

    comm = Communicator()
    methods = {"rd": recursive_doubling_allreduce, "ring": ring_allreduce}
    rows, nbytes = [], args.min_bytes
    while nbytes <= args.max_bytes:
        x = np.zeros(max(nbytes // 4, 1), np.float32)
        times = {name: [] for name in methods}
        for name, fn in methods.items():  # warm-up
            fn(comm, x)
        for _ in range(args.passes):
            for name, fn in methods.items():
                for _ in range(args.iters):
                    comm.mpi.Barrier()
                    t0 = perf_counter()
                    fn(comm, x)
                    times[name].append(perf_counter() - t0)
        med = {name: comm.mpi.allreduce(float(np.median(t)), op=MPI.MAX) for name, t in times.items()}
        rows.append({"bytes": nbytes, **med})
        nbytes *= 2
    if comm.rank == 0:
        print(json.dumps(rows), flush=True)


def crossover(rows):
    """The smallest size from which ring <= rd at that size and all larger ones, or None."""
    best = None
    for row in reversed(rows):
        if row["ring"] > row["rd"]:
            break
        best = row["bytes"]
    return best


def auto_rows(crossover_bytes):
    """One N's rows in minidist.comm.auto's table shape."""
    rows = [(0, "recursive_doubling")]
    return tuple(rows + ([(crossover_bytes, "ring")] if crossover_bytes is not None else []))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from benchutil import cores, mpiexec_command, one_thread_env

    table = {}
    print(f"crossover: ring vs recursive doubling, float32 sum, {cores()} cores, one BLAS thread "
          f"per rank, {args.passes} x {args.iters} iterations per size", flush=True)
    for n in args.ranks:
        cmd = mpiexec_command(n) + [sys.executable, os.path.abspath(__file__), "--worker",
                                    "--min-bytes", str(args.min_bytes), "--max-bytes", str(args.max_bytes),
                                    "--iters", str(args.iters), "--passes", str(args.passes)]
        env = {**os.environ, **one_thread_env(), "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"N={n} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        table[n] = {"crossover_bytes": crossover(rows), "rows": rows}
        note = " (ranks > cores)" if n > cores() else ""
        print(f"N={n}{note}: ring wins from {table[n]['crossover_bytes'] or 'none'} B;  rd/ring: "
              + " ".join(f"{r['bytes']}:{r['rd'] / r['ring']:.2f}" for r in rows), flush=True)
    print("# minidist.comm.auto table (set_auto_table); rd throughout where the ring never won for good")
    print("MEASURED_TABLE = " + repr({n: auto_rows(t["crossover_bytes"]) for n, t in table.items()}))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({str(n): t for n, t in table.items()}, f, indent=1)
        os.replace(tmp, args.json)
    return table


if __name__ == "__main__":
    main()
