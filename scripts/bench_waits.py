"""How the Communicator's polling waits cost against MPICH's blocking ones, oversubscribed.

    python scripts/bench_waits.py --ranks 4 --cores 0,1 --pairs 5 --baseline /path/to/old/checkout

Runs, in turns within each pair, ``taskset -c CORES mpiexec -n RANKS`` of this file in
worker mode under three variants: the baseline checkout (e.g. one whose waits block inside
MPI), this checkout with ``MINIDIST_YIELD=0`` (spin) and with ``MINIDIST_YIELD=1``
(yield). Each launch times `ring_allreduce` of float32 at 4 KiB, 256 KiB and 4 MiB (a
barrier before each call; the median of --iters calls). Prints, per variant, the median
over pairs of its time divided by the baseline's in the same pair (docs/reliability.md).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from time import perf_counter

SIZES = (4 << 10, 256 << 10, 4 << 20)
HERE = Path(__file__).resolve().parent


def worker(iters: int) -> None:
    import numpy as np

    from minidist.comm import Communicator, ring_allreduce

    comm = Communicator()
    medians = {}
    for nbytes in SIZES:
        x = np.ones(nbytes // 4, np.float32)
        times = []
        for i in range(iters + 3):  # 3 warm-up calls
            comm.barrier()
            t0 = perf_counter()
            ring_allreduce(comm, x)
            times.append(perf_counter() - t0)
        medians[nbytes] = statistics.median(times[3:])
    if comm.rank == 0:
        print(json.dumps(medians))


def launch(args, checkout: str, yielding: str) -> dict:
    env = dict(os.environ, PYTHONPATH=checkout, MINIDIST_YIELD=yielding, OMP_NUM_THREADS="1")
    cmd = ["taskset", "-c", args.cores, "mpiexec", "-n", str(args.ranks), sys.executable,
           __file__, "--worker", "--iters", str(args.iters)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=600)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--cores", default="0,1")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--baseline", required="--worker" not in sys.argv)
    args = p.parse_args()
    if args.worker:
        return worker(args.iters)
    variants = {"baseline": (args.baseline, "0"), "spin": (str(HERE.parent), "0"),
                "yield": (str(HERE.parent), "1")}
    runs = {v: [] for v in variants}
    for _ in range(args.pairs):
        for name, (checkout, yielding) in variants.items():
            runs[name].append(launch(args, checkout, yielding))
    print(f"{args.ranks} ranks on cores {args.cores}, {args.pairs} pairs: median of per-pair ratios")
    for name in ("spin", "yield"):
        ratios = [statistics.median(a[s] / b[s] for a, b in zip(runs[name], runs["baseline"]))
                  for s in SIZES]
        print(f"  {name}/baseline  " + "  ".join(f"{s >> 10} KiB: {r:.2f}" for s, r in zip(SIZES, ratios)))


if __name__ == "__main__":
    main()
