"""Time full training steps of minidist against PyTorch CPU, each in its own process.

    python scripts/bench_engine.py                        # all models, 1 thread, 5 pairs
    python scripts/bench_engine.py --threads 2 --pairs 7 --models mlp cnn
    python scripts/bench_engine.py --tune-malloc          # glibc told to keep freed memory (both)
    python scripts/bench_engine.py --compare malloc       # minidist tuned vs default malloc
    python scripts/bench_engine.py --compare numpy --models mlp   # minidist vs bare NumPy (enginefloor.py)
    python scripts/bench_engine.py --profile tiny         # pyinstrument profile of minidist's steps

One step is what a training loop does: forward, loss (cross-entropy), zero_grad, backward,
SGD step. Every run is a fresh process running one framework only (in one process,
PyTorch's allocations change NumPy's page-fault behaviour); the model is built by
minidist from seed 0 and its weights copied into torch, same float32 data, same SGD. A
run times --steps steps after --warmup and reports their median; runs are paired A B B A
(minidist, torch) and the ratio is the median of the pairs' ratios, with min and max.

Threads: OMP/OPENBLAS/MKL_NUM_THREADS in each worker's environment before NumPy or torch
load, then threadpoolctl (when installed) and torch.set_num_threads.
Page faults per step and peak resident memory (ru_maxrss) are reported per framework.
Targets (minidist / torch): MLP 784-512-512-10 batch 256 <= 0.9; tiny 2-16-3 MLP batch 8
<= 0.4; CNN batch 64 <= 0.8.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = {  # name: (title, input shape, classes)
    "mlp": ("MLP 784-512-512-10, batch 256", (256, 784), 10),
    "tiny": ("tiny MLP 2-16-3, batch 8", (8, 2), 3),
    "cnn": ("CNN 2x(conv3x3-BN-ReLU-pool2)+Linear, batch 64, 1x28x28", (64, 1, 28, 28), 10),
}
TARGETS = {"mlp": 0.9, "tiny": 0.4, "cnn": 0.8}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="threads for NumPy's BLAS and torch (default 1)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--pairs", type=int, default=5, help="paired runs per model (A B B A ...)")
    p.add_argument("--models", nargs="+", default=["mlp", "tiny", "cnn"], choices=sorted(CASES))
    p.add_argument("--tune-malloc", action="store_true", help="glibc keeps freed memory (mallopt), both sides")
    p.add_argument("--compare", choices=["torch", "malloc", "numpy", "numpy-torch"], default="torch",
                   help="torch: minidist / torch; malloc: minidist with / without --tune-malloc; "
                        "numpy: minidist / the bare NumPy step of enginefloor.py (mlp, tiny); "
                        "numpy-torch: that NumPy step / torch")
    p.add_argument("--profile", choices=sorted(CASES), help="profile minidist's steps with pyinstrument")
    p.add_argument("--worker", choices=["minidist", "torch", "numpy"], help=argparse.SUPPRESS)
    p.add_argument("--model", choices=sorted(CASES), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- a worker: one framework, one model, one process -------------------------------------------
def build(name, rng):
    from minidist import nn

    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, rng=rng), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, 10, rng=rng))
    widths = [784, 512, 512, 10] if name == "mlp" else [2, 16, 3]
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b, rng=rng)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def stepper(framework, model, x, y):
    """One training step (forward, loss, zero_grad, backward, SGD) as a function."""
    if framework == "numpy":
        from enginefloor import numpy_stepper

        return numpy_stepper(model, x, y)
    if framework == "torch":
        import torch
        from benchutil import to_torch

        net = to_torch(torch, model)
        opt, xt, yt, loss_fn = (torch.optim.SGD(net.parameters(), lr=0.01), torch.from_numpy(x),
                                torch.from_numpy(y), torch.nn.functional.cross_entropy)
    else:
        import minidist
        from minidist.nn import functional as F
        from minidist.optim import SGD

        net, opt, xt, yt, loss_fn = model, SGD(model.parameters(), lr=0.01), minidist.Tensor(x), y, F.cross_entropy

    def step():
        loss = loss_fn(net(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    return step


def worker(args):
    sys.path.insert(0, os.path.dirname(HERE))
    from benchutil import emit, minor_faults, peak_rss_mib, tune_malloc

    tuned = tune_malloc() if args.tune_malloc else False
    import numpy as np

    limit_threads(args.threads, args.worker == "torch")
    _, shape, classes = CASES[args.model]
    rng = np.random.default_rng(0)
    model = build(args.model, rng)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, classes, shape[0]).astype(np.int64)
    step = stepper(args.worker, model, x, y)
    first_loss = step()
    for _ in range(args.warmup):
        step()
    times, faults = [], minor_faults()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    emit({"median_s": float(np.median(times)), "faults_per_step": (minor_faults() - faults) / args.steps,
          "first_loss": first_loss, "peak_rss_mib": peak_rss_mib(), "malloc_tuned": tuned})


def limit_threads(threads, torch_side):
    if torch_side:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass


# ---- the parent: paired runs, ratios -----------------------------------------------------------
def run_worker(framework, model, args, tune):
    from benchutil import one_thread_env, run_json

    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--model", model,
           "--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    return run_json(cmd + (["--tune-malloc"] if tune else []), env=one_thread_env(args.threads))


def compare(name, args, torch_present):
    from benchutil import paired, ratio_stats, ratio_text

    title = CASES[name][0]
    if args.compare == "malloc":
        sides = (("tuned", lambda: run_worker("minidist", name, args, True)),
                 ("default", lambda: run_worker("minidist", name, args, False)))
    elif args.compare.startswith("numpy") and name == "cnn":
        print(f"{title}\n    no bare NumPy step for the CNN (enginefloor.py writes the MLPs only)")
        return None
    elif args.compare == "numpy":
        sides = (("minidist", lambda: run_worker("minidist", name, args, args.tune_malloc)),
                 ("numpy", lambda: run_worker("numpy", name, args, args.tune_malloc)))
    else:
        first = "numpy" if args.compare == "numpy-torch" else "minidist"
        sides = ((first, lambda: run_worker(first, name, args, args.tune_malloc)),)
        if torch_present:
            sides += (("torch", lambda: run_worker("torch", name, args, args.tune_malloc)),)
    if len(sides) == 1:
        runs = [[sides[0][1]() for _ in range(args.pairs)]]
    else:
        runs = list(paired(sides[0][1], sides[1][1], args.pairs))
    parts = []
    for (label, _), rs in zip(sides, runs):
        med = sorted(r["median_s"] for r in rs)[len(rs) // 2]
        parts.append(f"{label} {med * 1e3:7.3f} ms, {sum(r['faults_per_step'] for r in rs) / len(rs):5.0f} "
                     f"faults/step, peak {max(r['peak_rss_mib'] for r in rs):5.0f} MiB")
    print(f"{title}\n    " + "; ".join(parts), flush=True)
    if len(runs) == 2:
        stats = ratio_stats([r["median_s"] for r in runs[0]], [r["median_s"] for r in runs[1]])
        met = "ok" if stats["median"] <= TARGETS[name] else "MISS"
        target = {"minidist/torch": f" (target <= {TARGETS[name]}: {met})",
                  "numpy/torch": f" (minidist's target <= {TARGETS[name]}; bare NumPy {'meets' if met == 'ok' else 'misses'} it)",
                  "minidist/numpy": "; same first loss: " + str(
                      runs[0][0]["first_loss"] == runs[1][0]["first_loss"])}.get(f"{sides[0][0]}/{sides[1][0]}", "")
        print(f"    ratio {sides[0][0]} / {sides[1][0]}: {ratio_text(stats)}{target}", flush=True)
        return stats
    return None


def profile(name, args):
    import numpy as np
    from pyinstrument import Profiler

    _, shape, classes = CASES[name]
    rng = np.random.default_rng(0)
    step = stepper("minidist", build(name, rng), rng.standard_normal(shape).astype(np.float32),
                   rng.integers(0, classes, shape[0]).astype(np.int64))
    for _ in range(args.warmup):
        step()
    with Profiler(interval=0.0001) as profiler:
        for _ in range(args.steps):
            step()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    sys.path.insert(0, os.path.dirname(HERE))
    if args.profile:
        return profile(args.profile, args)
    from benchutil import cores, malloc_note, torch_available

    has_torch = torch_available()
    print(f"threads: {args.threads} per process (env + threadpoolctl + torch.set_num_threads); "
          f"{cores()} cores; {args.pairs} paired runs of {args.steps} steps after {args.warmup} warm-up; "
          f"{malloc_note(args.tune_malloc, args.tune_malloc)}; separate processes per framework")
    if not has_torch and args.compare in ("torch", "numpy-torch"):
        print("torch is not installed (or MINIDIST_BENCH_NO_TORCH is set): PyTorch side skipped, "
              "the first side timed alone")
    for name in args.models:
        compare(name, args, has_torch)


if __name__ == "__main__":
    main()
