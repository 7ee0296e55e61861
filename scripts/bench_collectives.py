"""Benchmark minidist's all-reduce algorithms against MPI_Allreduce, OSU / nccl-tests style.

    mpiexec -n 2 python scripts/bench_collectives.py                      # 8 B .. 64 MiB
    mpiexec -n 4 python scripts/bench_collectives.py --max-bytes 4M --csv out.csv --json out.json
    mpiexec -n 2 python scripts/bench_collectives.py --save-profile calibrated.json
    mpiexec -n 2 python scripts/bench_collectives.py --profile calibrated.json   # no calibration
    mpiexec -n 2 python scripts/bench_collectives.py --tune-malloc   # glibc keeps freed memory

For every power-of-two size from --min-bytes (8 B) to --max-bytes (64 MiB) of float32 sum:
warm-up iterations, then timed iterations (as many as fit --seconds per method, within
[--min-iters, --max-iters]), the methods interleaved in --passes passes so a noisy
neighbour hits all alike; a barrier before each iteration, outside the timed region (as
in OSU's osu_allreduce). A rank's time is the median of its iterations (OSU takes the
mean; this machine is shared); avg / min / max are then over ranks (CSV / JSON; the table
shows the average). Every method's result is checked once per size before timing.

Columns (times in microseconds):
  ring, rd, rab, auto  our ring, recursive doubling, Rabenseifner and allreduce("auto")
                       (model-driven with the calibrated profile; the letter says which)
  mpi                  MPI_Allreduce (MPICH: see costmodel.mpich_allreduce_algorithm)
  g+b                  our gather_to_root + sum on the root + broadcast (--bcast)
  floor                the ring's Sendrecv transfers alone: raw mpi4py, no arithmetic, no ledger
  busbw                nccl-tests' bus bandwidth, algbw * 2(N-1)/N, algbw = bytes / time (GB/s)
  py                   the ring's per-call Python overhead: ring - floor (checks, schedule, ledger, adds)
  gloo, ring/gloo      torch.distributed.all_reduce on gloo (when torch is installed; same buffer)
  ring/mpi, auto/mpi, ring/floor
  ledger               the same transfers through the instrumented comm.sendrecv / floor
  model, ring/model    the calibrated alpha-beta-gamma prediction of the ring, measured/predicted;
                       after the sweep a second calibration measures the drift, and the
                       targets use the mean of both profiles ("ring/model (mean)")

Targets: ring/mpi <= 1.0 at >= 4 MiB; auto/mpi <= 1.2 at 4 KiB and <= 1.0 from 256 KiB;
ring/floor <= 1.15 at >= 1 MiB; ledger <= 1.05 at >= 1 MiB; ring/model in 0.8..1.25 at
>= 64 KiB. A summary of them closes the run. With more ranks than cores (e.g. -n 4 on 2 cores) every number is
oversubscribed: MPICH's ranks busy-poll and share the cores; the header says so.

Memory and transport: minidist is imported first, so a minidist job's defaults apply to
both sides alike (one process runs both): glibc keeps freed memory (minidist/allocator.py;
``MINIDIST_MALLOC=default``: glibc's own, which ``--tune-malloc`` overrides) and MPICH
copies messages under 512 KiB through shared memory (minidist/mpich.py).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from time import perf_counter

import minidist  # noqa: F401 first: a minidist job's defaults (minidist/__init__.py) apply before NumPy and MPI start
import numpy as np
from mpi4py import MPI

from minidist.comm import (Communicator, allreduce, broadcast, gather_to_root,
                           rabenseifner_allreduce, recursive_doubling_allreduce, ring_allreduce)
from minidist.cost import costmodel
from minidist.comm.auto import choose_allreduce_algorithm
from minidist.cost.calibrate import calibrate
from minidist.comm.checks import chunk_bounds

from benchutil import malloc_note, minidist_tunes_malloc, parse_bytes, start_gloo, tune_malloc  # scripts/ is sys.path[0] for a script
from bench_collectives_report import HEADER, drift, format_row, mean_profile, summarize, write_csv

METHODS = ("ring", "rd", "rab", "auto", "mpi", "g+b", "floor", "instrumented", "gloo")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--min-bytes", type=parse_bytes, default=8)
    p.add_argument("--max-bytes", type=parse_bytes, default=64 << 20)
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per method and size")
    p.add_argument("--seconds", type=float, default=0.06, help="timing budget per method and size")
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--max-iters", type=int, default=500)
    p.add_argument("--passes", type=int, default=3, help="interleaved passes over the methods")
    p.add_argument("--bcast", choices=("linear", "binomial"), default="linear",
                   help="broadcast algorithm of the g+b column (dp uses linear)")
    p.add_argument("--profile", help="a JSON profile (save_profile) instead of calibrating")
    p.add_argument("--save-profile", help="write the calibrated profile here (JSON)")
    p.add_argument("--quick-calibration", action="store_true", help="tiny calibration sweep")
    p.add_argument("--no-recalibrate", action="store_true",
                   help="skip the second calibration after the sweep (see 'drift')")
    p.add_argument("--tune-malloc", action="store_true",
                   help="glibc: keep freed memory in each process (mallopt) instead of handing "
                        "it back to the OS; affects our collectives and MPI's alike")
    p.add_argument("--csv", help="write one row per size here")
    p.add_argument("--json", help="write everything (meta, profile, rows) here")
    return p.parse_args(argv)


class Bench:
    """The methods on one float32 buffer of `count` elements, each a no-argument call."""

    def __init__(self, comm: Communicator, count: int, bcast: str, gloo=None):
        self.comm, self.mpi = comm, comm.mpi
        self.x = np.zeros(count, np.float32)  # zeros: the sums never overflow
        self.bounds = chunk_bounds(count, comm.size)
        self.scratch = np.empty(-(-count // comm.size), np.float32)
        self.bcast = bcast
        self.calls = {
            "ring": lambda: ring_allreduce(comm, self.x),
            "rd": lambda: recursive_doubling_allreduce(comm, self.x),
            "rab": lambda: rabenseifner_allreduce(comm, self.x),
            "auto": lambda: allreduce(comm, self.x, algorithm="auto"),
            "mpi": lambda: self.mpi.Allreduce(MPI.IN_PLACE, self.x, MPI.SUM),
            "g+b": self.gather_broadcast,
            "floor": lambda: self.ring_transfers(self.bare_sendrecv),
            "instrumented": lambda: self.ring_transfers(comm.sendrecv),
        }
        if gloo is not None:  # torch.distributed on gloo, reducing the same memory in place
            tensor = gloo.torch.from_numpy(self.x)
            self.calls["gloo"] = lambda: gloo.all_reduce(tensor)

    def gather_broadcast(self):
        gathered = gather_to_root(self.comm, self.x)
        if gathered is not None:
            np.sum(gathered, axis=0, out=self.x)
        broadcast(self.comm, self.x, algorithm=self.bcast)

    def bare_sendrecv(self, sendbuf, dest, recvbuf, source):
        self.mpi.Sendrecv(sendbuf, dest, 0, recvbuf, source, 0)

    def ring_transfers(self, sendrecv):
        """ring_allreduce's 2(N-1) Sendrecv transfers, same chunks, same peers, no adds."""
        rank, size, b, x = self.comm.rank, self.comm.size, self.bounds, self.x
        right, left = (rank + 1) % size, (rank - 1) % size
        for step in range(size - 1):  # reduce-scatter: partials into scratch
            s0, s1 = b[(rank - step - 1) % size]
            r0, r1 = b[(rank - step - 2) % size]
            sendrecv(x[s0:s1], right, self.scratch[: r1 - r0], left)
        for step in range(size - 1):  # all-gather: straight into place
            s0, s1 = b[(rank - step) % size]
            r0, r1 = b[(rank - step - 1) % size]
            sendrecv(x[s0:s1], right, x[r0:r1], left)

    def check(self, name):
        """Run `name` once on rank+1 everywhere; the sum must be N(N+1)/2."""
        self.x[:] = self.comm.rank + 1
        self.calls[name]()
        size = self.comm.size
        ok = np.array([bool(np.all(self.x == size * (size + 1) // 2))])
        every = np.empty_like(ok)
        self.mpi.Allreduce(ok, every, MPI.LAND)
        self.x[:] = 0
        if not every[0]:
            raise RuntimeError(f"{name} gave a wrong all-reduce result for {self.x.nbytes} bytes "
                               f"on {size} ranks")

    def time(self, name, iters):
        call, barrier, times = self.calls[name], self.mpi.Barrier, []
        for _ in range(iters):
            barrier()
            t0 = perf_counter()
            call()
            times.append(perf_counter() - t0)
        return times


def agree_iters(mpi, seconds_per_iter, args):
    """Iterations that fit the budget, decided from the slowest rank, the same everywhere."""
    local = np.array([seconds_per_iter])
    slowest = np.empty_like(local)
    mpi.Allreduce(local, slowest, MPI.MAX)
    return int(np.clip(args.seconds / max(slowest[0], 1e-9), args.min_iters, args.max_iters))


def over_ranks(mpi, value):
    """(avg, min, max) of a per-rank value."""
    v = np.array([value])
    total, lo, hi = np.empty_like(v), np.empty_like(v), np.empty_like(v)
    mpi.Allreduce(v, total, MPI.SUM)
    mpi.Allreduce(v, lo, MPI.MIN)
    mpi.Allreduce(v, hi, MPI.MAX)
    return float(total[0] / mpi.size), float(lo[0]), float(hi[0])


def predictions(profile, size, nbytes, bcast):
    """Model seconds for each measured method (floor: the ring's transfers, no adds)."""
    p = lambda c, **kw: costmodel.predict(c, size, nbytes, profile, **kw)  # noqa: E731
    return {"ring": p("ring_allreduce"), "rd": p("recursive_doubling_allreduce"),
            "rab": p("rabenseifner_allreduce"), "auto": p("allreduce", algorithm="auto"),
            "mpi": p("mpi_allreduce"),
            "g+b": p("gather_to_root") + (size - 1) * nbytes * profile.gamma
            + p("broadcast", algorithm=bcast),
            "floor": 2 * p("ring_allgather")}  # the ring's 2(N-1) transfers, no adds


def measure_size(comm, nbytes, args, profile, gloo=None):
    bench = Bench(comm, max(nbytes // 4, 1), args.bcast, gloo)
    methods = [m for m in METHODS if m in bench.calls]
    for name in [m for m in methods if m not in ("floor", "instrumented")]:
        bench.check(name)
    iters = {}
    for name in methods:  # warm-up, and the iteration count that fits the budget
        warm = bench.time(name, args.warmup)
        iters[name] = agree_iters(comm.mpi, float(np.median(warm)), args)
    times = {name: [] for name in methods}
    for k in range(args.passes):
        for name in methods:
            share = iters[name] // args.passes + (k < iters[name] % args.passes)
            times[name] += bench.time(name, max(share, 1))
    row = {"bytes": nbytes, "count": bench.x.size, "iters": iters,
           "auto_algorithm": choose_allreduce_algorithm(nbytes, comm.size)}
    for name in methods:
        row[name] = over_ranks(comm.mpi, float(np.median(times[name])))
    t = {name: row[name][0] for name in methods}
    factor = 2 * (comm.size - 1) / comm.size
    row["predicted"] = predictions(profile, comm.size, nbytes, args.bcast)
    row.update({"algbw_ring": nbytes / t["ring"] / 1e9, "algbw_mpi": nbytes / t["mpi"] / 1e9,
                "busbw_ring": factor * nbytes / t["ring"] / 1e9,
                "busbw_mpi": factor * nbytes / t["mpi"] / 1e9,
                "ring/mpi": t["ring"] / t["mpi"], "auto/mpi": t["auto"] / t["mpi"],
                "ring/floor": t["ring"] / t["floor"], "py_us": (t["ring"] - t["floor"]) * 1e6, "ledger": t["instrumented"] / t["floor"],
                "ring/model": t["ring"] / row["predicted"]["ring"],
                # what the model says ring/floor can be at best: the adds cannot overlap
                # the copies when both run on the rank's own core
                "model ring/floor": row["predicted"]["ring"] / row["predicted"]["floor"]})
    if "gloo" in t:
        row["ring/gloo"] = t["ring"] / t["gloo"]
    return row


def header(comm, profile, args, malloc, say):
    """Print the run's header lines (rank 0); return its metadata."""
    cores = os.cpu_count() or 1
    meta = {"ranks": comm.size, "ranks_per_node": profile.ranks_per_node, "cores": cores,
            "oversubscribed": profile.ranks_per_node > cores,
            "mpi": MPI.Get_library_version().splitlines()[0].strip(),
            "thread_level": MPI.Query_thread(), "dtype": "float32", "op": "sum",
            "bcast": args.bcast, "python": sys.version.split()[0],
            "malloc": malloc}
    say(f"# {comm.size} ranks, {profile.ranks_per_node} per node, {cores} cores"
        + ("  ** OVERSUBSCRIBED: more ranks than cores, all times inflated **"
           if meta["oversubscribed"] else ""))
    say(f"# {meta['mpi']}; thread level {meta['thread_level']}; float32 sum; times in us; "
        f"{meta['malloc']}")
    say(f"# profile: alpha={profile.alpha * 1e6:.2f} us, beta={profile.beta * 1e9:.4f} ns/B "
        f"({profile.bandwidth / 1e9:.2f} GB/s), gamma={profile.gamma * 1e9:.4f} ns/B, "
        f"node_bw={(profile.node_bw or float('inf')) / 1e9:.2f} GB/s"
        + (f", rendezvous alpha={profile.rendezvous_alpha * 1e6:.2f} us above "
           f"{profile.eager_max} B" if profile.eager_max is not None else ""))
    return meta


def recalibrate(comm, profile, rows, args, say):
    """Calibrate again after the sweep; add the mean profile's predictions to `rows`."""
    end = calibrate(comm, quick=args.quick_calibration)
    mean = mean_profile(profile, end)
    for row in rows:
        row["predicted (mean)"] = predictions(mean, comm.size, row["bytes"], args.bcast)
        row["ring/model (mean)"] = row["ring"][0] / row["predicted (mean)"]["ring"]
    say("# drift between the calibrations before and after the sweep: " + ", ".join(
        f"{k} {v:+.0f}%" for k, v in drift(profile, end).items())
        + "; ring/model (mean of both): " + ", ".join(
        f"{r['bytes'] >> 10}K:{r['ring/model (mean)']:.2f}" for r in rows if r["bytes"] >= 1024))
    return end


def main(argv=None):
    args = parse_args(argv)
    requested, tuned = (True, tune_malloc()) if args.tune_malloc else minidist_tunes_malloc()  # before big allocations
    comm = Communicator()
    rank0 = comm.rank == 0
    say = (lambda *a: print(*a, flush=True)) if rank0 else (lambda *a: None)
    if args.profile:
        profile = costmodel.load_profile(args.profile)
    else:
        t0 = perf_counter()
        profile = calibrate(comm, quick=args.quick_calibration)
        say(f"# calibrated in {perf_counter() - t0:.1f} s")
        if args.save_profile and rank0:
            costmodel.save_profile(profile, args.save_profile)
    costmodel.use_profile(profile)  # installs the profile's "auto" table in minidist.comm
    meta = header(comm, profile, args, malloc_note(requested, tuned), say)
    gloo = start_gloo(comm)
    say("# gloo: torch.distributed.all_reduce, same ranks" if gloo else
        "# torch is not installed (or MINIDIST_BENCH_NO_TORCH is set): gloo column skipped")
    say(HEADER)
    rows, nbytes = [], args.min_bytes
    while nbytes <= args.max_bytes:
        row = measure_size(comm, nbytes, args, profile, gloo)
        rows.append(row)
        say(format_row(row))
        nbytes *= 2
    recalibrating = rows and not args.profile and not args.no_recalibrate
    end = recalibrate(comm, profile, rows, args, say) if recalibrating else None
    if rank0 and rows:
        print("# targets (! = missed)\n" + summarize(rows), flush=True)
        if args.csv:
            write_csv(args.csv, rows, [m for m in METHODS if m in rows[0]])
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "profile": profile.to_dict(),
                           "profile_after": end.to_dict() if end else None, "rows": rows},
                          f, indent=1)


if __name__ == "__main__":
    main()
