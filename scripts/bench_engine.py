"""Time full training steps of minidist against PyTorch CPU, side by side.

    python scripts/bench_engine.py                       # all models, 1 thread, 30 steps each
    python scripts/bench_engine.py --threads 2 --steps 50 --models mlp cnn
    python scripts/bench_engine.py --tune-malloc         # same, glibc told to keep freed memory
    python scripts/bench_engine.py --profile tiny        # pyinstrument profile of minidist's steps

One step is what a training loop does: forward, loss (cross-entropy), zero_grad, backward,
SGD step. Each model is built once in minidist and once in torch with the same weights
(copied), the same float32 data and the same SGD; after `--warmup` steps, the two
frameworks alternate in rounds of a few steps (so a noisy neighbour on a shared machine
hits both alike) until each has `--steps` timed steps; the medians are compared.

Threads: the thread count is fixed for both before anything is imported: the environment
variables OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS (read by NumPy's BLAS
and torch at load), then threadpoolctl's `threadpool_limits` (when installed) on every
loaded BLAS/OpenMP pool, and torch.set_num_threads / set_num_interop_threads.

Page faults: it also counts the minor page faults per step. A fresh multi-megabyte NumPy
array is faulted in page by page when glibc has handed the memory back to the OS, which
it does at the end of each step; `--tune-malloc` (mallopt, both frameworks) stops that.

Targets (ratio = minidist median / torch median): MLP 784-512-512-10 batch 256 <= 1.2;
tiny MLP (width 16, batch 8: per-op overhead) <= 1.0; small CNN <= 2.0.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

from benchutil import malloc_note, tune_malloc  # scripts/ is sys.path[0] for a script


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="threads for NumPy's BLAS and torch (default 1)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per framework and model (>= 20 advised)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--models", nargs="+", default=["mlp", "tiny", "cnn"], choices=["mlp", "tiny", "cnn"])
    p.add_argument("--tune-malloc", action="store_true", help="glibc: keep freed memory in the process "
                   "(mallopt) instead of handing it back to the OS after every step; affects both frameworks")
    p.add_argument("--profile", choices=["mlp", "tiny", "cnn"], help="profile minidist's steps on this model "
                   "with pyinstrument instead of benchmarking")
    return p.parse_args(argv)


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before numpy/torch load their thread pools

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import minidist  # noqa: E402
from minidist import nn  # noqa: E402
from minidist.nn import functional as F  # noqa: E402
from minidist.optim import SGD  # noqa: E402


# ---- the models, built in both frameworks -----------------------------------------------------
def mlp(widths, rng):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, rng=rng))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def small_cnn(rng):
    """2 x (conv3x3 - BatchNorm - ReLU - maxpool2), then Linear: 1x28x28 -> 10 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, rng=rng), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10, rng=rng))


def to_torch(torch, model):
    """The same architecture in torch, with minidist's weights copied in."""
    tnn = torch.nn
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            layers.append(tnn.Linear(m.in_features, m.out_features))
        elif isinstance(m, nn.Conv2d):
            o, c, kh, kw = m.weight.shape
            layers.append(tnn.Conv2d(c, o, (kh, kw), stride=m.stride, padding=m.padding))
        elif isinstance(m, nn.BatchNorm2d):
            layers.append(tnn.BatchNorm2d(m.num_features))
        elif isinstance(m, nn.ReLU):
            layers.append(tnn.ReLU())
        elif isinstance(m, nn.MaxPool2d):
            layers.append(tnn.MaxPool2d(2))
        elif isinstance(m, nn.Flatten):
            layers.append(tnn.Flatten())
        else:
            raise TypeError(f"no torch counterpart written for {type(m).__name__}")
    net = tnn.Sequential(*layers)
    with torch.no_grad():
        for (_, src), (_, dst) in zip(model.named_parameters(), net.named_parameters()):
            dst.copy_(torch.from_numpy(src.data.copy()))
    return net


CASES = {  # name: (title, builder, input shape, classes)
    "mlp": ("MLP 784-512-512-10, batch 256", lambda rng: mlp([784, 512, 512, 10], rng), (256, 784), 10),
    "tiny": ("tiny MLP 16-16-16-16, batch 8", lambda rng: mlp([16, 16, 16, 16], rng), (8, 16), 16),
    "cnn": ("CNN 2x(conv3x3-BN-ReLU-pool2)+Linear, batch 64, 1x28x28", small_cnn, (64, 1, 28, 28), 10),
}
TARGETS = {"mlp": 1.2, "tiny": 1.0, "cnn": 2.0}


# ---- one training step in each framework ----------------------------------------------------------
def minidist_stepper(model, x, y):
    opt = SGD(model.parameters(), lr=0.01)
    xt = minidist.Tensor(x)

    def step():
        loss = F.cross_entropy(model(xt), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


def torch_stepper(torch, net, x, y):
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


def timed(step, n, faults=None):
    """Run `step` n times; return each run's seconds. Adds the minor page faults taken to
    `faults[0]` (fresh large arrays fault page by page: a real cost on some machines)."""
    out = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    if faults is not None:
        faults[0] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return out


def bench(name, torch, args):
    title, build, shape, classes = CASES[name]
    rng = np.random.default_rng(0)
    model = build(rng)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, classes, shape[0]).astype(np.int64)
    steps = {"minidist": minidist_stepper(model, x, y), "torch": torch_stepper(torch, to_torch(torch, model), x, y)}
    times = {k: [] for k in steps}
    faults = {k: [0] for k in steps}
    first_loss = {k: float(step().item()) for k, step in steps.items()}  # same weights, same data
    for k, step in steps.items():
        timed(step, args.warmup)
    per_round = 5
    while len(times["minidist"]) < args.steps:
        for k, step in steps.items():
            times[k] += timed(step, min(per_round, args.steps - len(times[k])), faults[k])
    med = {k: float(np.median(v)) for k, v in times.items()}
    ratio = med["minidist"] / med["torch"]
    verdict = "ok" if ratio <= TARGETS[name] else "MISS"
    print(f"{title:58s} minidist {med['minidist'] * 1e3:8.3f} ms   torch {med['torch'] * 1e3:8.3f} ms   "
          f"ratio {ratio:5.2f} (target <= {TARGETS[name]}: {verdict})", flush=True)
    loss_gap = abs(first_loss["minidist"] - first_loss["torch"])
    print(f"{'':58s} first-step loss gap {loss_gap:.1e}; page faults/step minidist "
          f"{faults['minidist'][0] / args.steps:.0f}, torch {faults['torch'][0] / args.steps:.0f}", flush=True)
    return ratio


def profile(name, args):
    from pyinstrument import Profiler

    title, build, shape, classes = CASES[name]
    rng = np.random.default_rng(0)
    model = build(rng)
    step = minidist_stepper(model, rng.standard_normal(shape).astype(np.float32),
                            rng.integers(0, classes, shape[0]).astype(np.int64))
    timed(step, args.warmup)
    profiler = Profiler(interval=0.0001)
    with profiler:
        timed(step, args.steps)
    print(f"minidist, {title}, {args.steps} steps")
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main(args):
    malloc = malloc_note(args.tune_malloc, args.tune_malloc and tune_malloc())
    if args.profile:
        profile(args.profile, args)
        return
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:  # only settable before torch's first parallel work
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        how = "env vars + threadpoolctl + torch.set_num_threads"
    except ImportError:
        how = "env vars + torch.set_num_threads (threadpoolctl not installed)"
    print(f"threads: {args.threads} ({how}); torch {torch.__version__}, numpy {np.__version__}; "
          f"median of {args.steps} steps after {args.warmup} warm-up, float32; {malloc}")
    for name in args.models:
        bench(name, torch, args)


if __name__ == "__main__":
    main(ARGS)
