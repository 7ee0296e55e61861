"""Train the same model with the same weights under minidist (ddp, dp, hub; mpiexec) and
PyTorch DDP on gloo (N processes, as torchrun starts them; init_method file://), and compare step times.

    python scripts/bench_ddp.py                      # MLP and CNN, N = 1..4, 5 rounds
    python scripts/bench_ddp.py --quick              # N = 2, ddp only, 1 round: < 60 s
    python scripts/bench_ddp.py --models cnn --ranks 2 4 --strategies ddp dp --rounds 7

Models: the MLP 784-512-512-10 and the small CNN (conv3x3 16ch + BN + ReLU + maxpool2 +
Linear, 1x28x28), both at --batch (32) samples per rank, float32, SGD lr 0.01. Weights
come from minidist's seed-0 init on every rank and are copied into torch. Every run is a
fresh job of one framework; a round runs torch then each strategy, the next round the
reverse (A B B A), and each ratio minidist / torch is the median over rounds of the
rounds' ratios, with min and max. A run's step time is the slowest rank's median over
--steps timed steps (a barrier before each step, outside the timed region, on both
sides). Peak memory per process: VmHWM (ru_maxrss where /proc is absent), the largest
rank. One BLAS thread per rank on both sides. minidist's ranks run with its defaults
(under MPI: glibc keeps freed memory, minidist/allocator.py; --malloc-ab adds a ddp side
without it, 'ddp/glibc'); torch with its own.
Without torch (or with MINIDIST_BENCH_NO_TORCH=1) only minidist's times are printed.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
MODELS = {"mlp": "MLP 784-512-512-10", "cnn": "CNN conv3x3(16)-BN-ReLU-pool2-Linear"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=sorted(MODELS))
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 3, 4])
    p.add_argument("--strategies", nargs="+", default=["ddp", "dp", "hub"], choices=["ddp", "dp", "hub"])
    p.add_argument("--rounds", type=int, default=5, help="paired rounds (>= 5 for a median worth reading)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=32, help="samples per rank")
    p.add_argument("--quick", action="store_true", help="N = 2, ddp, 1 round, 5 steps")
    p.add_argument("--malloc-ab", action="store_true", help="also ddp with glibc's default malloc "
                   "(MINIDIST_MALLOC=default), as side 'ddp/glibc'")
    p.add_argument("--worker", choices=["minidist", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    p.add_argument("--model", default="mlp", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.ranks, args.strategies, args.rounds, args.steps, args.warmup = [2], ["ddp"], 1, 5, 1
    return args


# ---- both frameworks: the model, this rank's data, the timed loop -----------------------------
def build(name):
    import numpy as np
    from minidist import nn

    rng = np.random.default_rng(0)  # the same weights on every rank and in both frameworks
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, rng=rng), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 14 * 14, 10, rng=rng))
    return nn.Sequential(nn.Linear(784, 512, rng=rng), nn.ReLU(), nn.Linear(512, 512, rng=rng), nn.ReLU(),
                         nn.Linear(512, 10, rng=rng))


def shard(name, batch, rank):
    import numpy as np

    rng = np.random.default_rng(1000 + rank)
    shape = (batch, 1, 28, 28) if name == "cnn" else (batch, 784)
    return rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, batch).astype(np.int64)


def timed_steps(step, barrier, args):
    """Median seconds of `args.steps` steps after `args.warmup`, a barrier before each."""
    import numpy as np

    times = []
    for i in range(args.warmup + args.steps):
        barrier()
        t0 = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def report(args, rank, seconds):
    from benchutil import peak_rss_mib

    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump({"seconds": seconds, "peak_mib": peak_rss_mib()}, f)


def minidist_worker(args):
    import minidist  # noqa: F401  (its MPI defaults: one BLAS thread, malloc)
    from minidist.comm import Communicator
    from minidist.nn import functional as F
    from minidist.optim import SGD
    from minidist.parallel import wrap

    comm = Communicator()
    model = wrap(build(args.model), args.strategy, comm)
    opt = SGD(model.parameters(), lr=0.01)
    x, y = shard(args.model, args.batch, comm.rank)
    x = minidist.Tensor(x)

    def step():
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        model.step(opt)

    report(args, comm.rank, timed_steps(step, comm.mpi.Barrier, args))


def torch_worker(args):
    """One rank of PyTorch DDP (the parent starts N of these, as torchrun would)."""
    import torch
    import torch.distributed as dist
    from benchutil import to_torch

    torch.set_num_threads(1)
    init = f"file://{os.path.join(args.out, 'init')}"
    dist.init_process_group("gloo", init_method=init, rank=args.rank, world_size=args.n)
    net = torch.nn.parallel.DistributedDataParallel(to_torch(torch, build(args.model)))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = (torch.from_numpy(a) for a in shard(args.model, args.batch, args.rank))

    def step():
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    report(args, args.rank, timed_steps(step, dist.barrier, args))
    dist.destroy_process_group()


# ---- the parent: launches, rounds, ratios -----------------------------------------------------
def launch(framework, model, n, args, strategy="ddp", malloc="keep"):
    """One job; returns {"seconds": slowest rank's median, "peak_mib": largest rank's}."""
    from benchutil import mpiexec_command, one_thread_env

    with tempfile.TemporaryDirectory() as out:
        common = ["--worker", framework, "--model", model, "--n", str(n), "--out", out, "--batch",
                  str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd = [sys.executable, os.path.abspath(__file__), *common, "--strategy", strategy]
        cmds = [mpiexec_command(n) + cmd] if framework == "minidist" else \
            [cmd + ["--rank", str(r)] for r in range(n)]  # N processes, as torchrun starts them
        env = {**os.environ, **one_thread_env(), "MINIDIST_MALLOC": malloc, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
        procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for c in cmds]
        outputs = [p.communicate(timeout=600) for p in procs]
        ranks = [json.load(open(p)) for p in glob.glob(os.path.join(out, "rank*.json"))]
        if any(p.returncode for p in procs) or len(ranks) != n:
            raise RuntimeError(f"{' '.join(cmds[0])} failed (exit {[p.returncode for p in procs]}):\n"
                               f"{outputs[0][0][-1500:]}\n{outputs[0][1][-3000:]}")
    return {"seconds": max(r["seconds"] for r in ranks), "peak_mib": max(r["peak_mib"] for r in ranks)}


def compare(model, n, args, with_torch):
    """One table row per strategy for (model, n): medians, ratio to torch, peak memory."""
    from benchutil import cores, interleaved, ratio_stats, ratio_text

    sides = (["torch"] if with_torch else []) + args.strategies + (["ddp/glibc"] if args.malloc_ab else [])

    def run(side):
        if side == "torch":
            return launch("torch", model, n, args)
        strategy, _, malloc = side.partition("/")
        return launch("minidist", model, n, args, strategy, "default" if malloc == "glibc" else "keep")

    runs = [(lambda s=s: run(s)) for s in sides]
    results = dict(zip(sides, interleaved(runs, args.rounds)))
    label = f"{MODELS[model]}, N={n}" + (" (ranks > cores)" if n > cores() else "")
    rows = []
    for s in sides:
        med = sorted(r["seconds"] for r in results[s])[len(results[s]) // 2]
        peak = max(r["peak_mib"] for r in results[s])
        text = f"  {label:48s} {s:9s} {med * 1e3:8.2f} ms  peak {peak:6.1f} MiB/process"
        row = {"model": model, "n": n, "side": s, "median_s": med, "peak_mib": peak}
        if with_torch and s != "torch":
            stats = ratio_stats([r["seconds"] for r in results[s]], [r["seconds"] for r in results["torch"]])
            mem = ratio_stats([r["peak_mib"] for r in results[s]], [r["peak_mib"] for r in results["torch"]])
            text += f"  time / torch {ratio_text(stats)}  memory / torch {mem['median']:.2f}"
            row.update(ratio=stats, memory_ratio=mem)
        print(text, flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "minidist":
        return minidist_worker(args)
    if args.worker == "torch":
        return torch_worker(args)
    from benchutil import cores, torch_available

    with_torch = torch_available()
    print(f"bench_ddp: {cores()} cores, 1 BLAS thread per rank, batch {args.batch}/rank, float32, "
          f"{args.rounds} round(s) of {args.steps} timed steps after {args.warmup} warm-up", flush=True)
    if not with_torch:
        print("torch is not installed (or MINIDIST_BENCH_NO_TORCH is set): PyTorch DDP side skipped, "
              "minidist times only", flush=True)
    rows = [row for model in args.models for n in args.ranks for row in compare(model, n, args, with_torch)]
    return rows


if __name__ == "__main__":
    main()
