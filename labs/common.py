"""What the labs share: the command line, the seeds loop, training at a sample budget,
the verdict, the table, and the JSON / PNG output.

A lab's verdict is computed from `Check`s, each a measured comparison with the numbers
that decide it: "holds" when all pass, "does not hold" when a required one (or every
conditional one) fails, "holds only when ..." when conditional checks disagree (mixed
evidence, said as such). Prediction (step cost, cost model, profiles, message counts) is
imported here only, so the labs follow it when it moves (to ``minidist.cost``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict, dataclass

import minidist  # noqa: F401  (first: under mpiexec it sets one BLAS thread per rank before NumPy loads)
import numpy as np  # noqa: E402

from minidist.comm import allreduce  # noqa: E402
from minidist.parallel.trainer import train_step  # noqa: E402

# ---- prediction: the one place the labs import it from -----------------------------------------
from minidist.cost import costmodel  # noqa: E402,F401
from minidist.cost.counts import message_counts  # noqa: E402,F401
from minidist.cost.profiles import PROFILES  # noqa: E402,F401
from minidist.cost.stepcost import dense, describe, predict_step  # noqa: E402,F401

TOLERANCE = 1e-9  # "the same to round-off" for float64 runs of a few dozen steps


# ---- command line and seeds --------------------------------------------------------------------
def lab_parser(doc: str, seeds: int = 3) -> argparse.ArgumentParser:
    """A parser with every lab's options: --quick, --seeds, --seed, --json, --out (and
    the hidden --tiny, smaller than --quick, for CI)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small settings: seconds")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seeds", type=int, default=seeds, help=f"K: seeds to repeat over (default {seeds})")
    p.add_argument("--seed", type=int, default=0, help="the first seed (seeds are seed .. seed+K-1)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON (rank 0)")
    p.add_argument("--out", default=None, metavar="DIR", help="write the PNG plot(s) there (rank 0)")
    return p


def parse(p: argparse.ArgumentParser, argv=None):
    """Parse; --tiny implies --quick; `args.seed_list` holds the seeds."""
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1 (got {args.seeds})")
    args.quick = args.quick or args.tiny
    args.seed_list = [args.seed + i for i in range(args.seeds)]
    return args


def training_args(doc: str, argv=None, *, depth: int, budget: int, tiny_depth: int | None = None,
                  extra=None):
    """Parse the single-process training labs' options: --depth, --hidden, --batch,
    --budget (samples seen by every run), --lr; `extra(parser)` adds a lab's own."""
    p = lab_parser(doc)
    p.add_argument("--depth", type=int, default=depth, help="hidden blocks")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--budget", type=int, default=budget, help="samples seen by every run")
    p.add_argument("--lr", type=float, default=0.05)
    if extra is not None:
        extra(p)
    args = parse(p, argv)
    if args.tiny:
        args.budget, args.hidden, args.depth = budget // 20, 8, tiny_depth or args.depth
    elif args.quick:
        args.budget, args.hidden = budget // 6, 16
    return args


def int_list(text: str) -> list[int]:
    """'2,4,8' -> [2, 4, 8] (for argparse)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (got {text!r})") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers (got {text!r})")
    return values


def mean_spread(values) -> tuple[float, float]:
    """(mean, standard deviation over the seeds; 0 for one value)."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def pm(values, fmt: str = "{:.3f}") -> str:
    """'mean ± spread' of `values`."""
    m, s = mean_spread(values)
    return f"{fmt.format(m)} ± {fmt.format(s)}"


# ---- training at a sample budget ---------------------------------------------------------------
class StepLoader:
    """``StepLoader(loader, steps)``: exactly `steps` batches of `loader`, through as many
    epochs as that takes (``loader.set_epoch(e)`` before each)."""

    def __init__(self, loader, steps: int):
        if len(loader) == 0:
            raise ValueError(f"the loader yields no batch (dataset too small for batch_size="
                             f"{loader.batch_size}); use more samples or a smaller batch")
        self.loader, self.steps = loader, int(steps)

    def set_epoch(self, epoch: int) -> None:
        pass  # StepLoader numbers the inner epochs itself

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        done, epoch = 0, 0
        while done < self.steps:
            self.loader.set_epoch(epoch)
            for batch in self.loader:
                if done == self.steps:
                    return
                yield batch
                done += 1
            epoch += 1


def steps_for(samples: int, global_batch: int) -> int:
    """Steps that see `samples` samples with `global_batch` samples per step (>= 1)."""
    return max(1, int(samples) // int(global_batch))


def train_curve(model, optimizer, loader, steps: int, points: int = 20) -> list[float]:
    """Run `steps` steps; return the training loss averaged over each of `points` equal
    stretches of the run (a convergence curve at any batch size)."""
    losses = [float(train_step(model, optimizer, x, y)[2].item()) for x, y in StepLoader(loader, steps)]
    return [float(np.mean(part)) for part in np.array_split(np.array(losses), min(points, steps))]


def train_local(net, data, test, *, batch: int, budget: int, lr: float, seed: int, points: int = 20,
                momentum: float = 0.9) -> dict:
    """Train `net` in one process on `budget` samples (SGD); ``{curve, final_loss,
    accuracy, steps, samples}``: `curve` the loss over `points` stretches, `samples` the
    samples seen at the end of each stretch."""
    from minidist.optim import SGD
    from minidist.parallel import Trainer, distributed_loader, wrap

    model = wrap(net, "local")
    opt = SGD(model.parameters(), lr=lr, momentum=momentum)
    steps = steps_for(budget, batch)
    curve = train_curve(model, opt, distributed_loader(*data, batch, None, seed=seed, drop_last=True),
                        steps, points)
    ends = [len(part) for part in np.array_split(np.arange(steps), len(curve))]
    return {"curve": curve, "samples": (np.cumsum(ends) * batch).tolist(), "final_loss": curve[-1],
            "accuracy": Trainer(model, opt, progress=False).evaluate(*test), "steps": steps}


def spiral_data(seed: int, classes: int = 3, per_class: int = 200):
    """float64 spirals (train) and a held-out set drawn with another seed."""
    from minidist.data import spirals
    X, y = spirals(per_class, classes, seed=seed)
    Xt, yt = spirals(100, classes, seed=seed + 1000)
    return (X.astype(np.float64), y), (Xt.astype(np.float64), yt)


def flat_parameters(module) -> np.ndarray:
    return np.concatenate([p.data.ravel() for p in module.parameters()])


def max_over_ranks(comm, value: float) -> float:
    """The largest `value` of any rank (phase "lab", so it never mixes with a strategy's)."""
    if comm is None or comm.size == 1:
        return float(value)
    buf = np.array([value], dtype=np.float64)
    with comm.phase("lab"):
        allreduce(comm, buf, "max", "ring")
    return float(buf[0])


def sub_communicators(world, sizes):
    """Yield ``(n, Communicator)`` over the first n ranks of `world` for each n in
    `sizes` (ranks outside wait at the next split; every rank must iterate)."""
    from mpi4py import MPI

    from minidist.comm import Communicator
    for n in sizes:
        sub = world.mpi.Split(0 if world.rank < n else MPI.UNDEFINED, world.rank)
        if sub == MPI.COMM_NULL:
            continue
        yield n, Communicator(sub)
        sub.Free()


# ---- the verdict ---------------------------------------------------------------------------------
@dataclass
class Check:
    """One measured comparison: `numbers` says what was measured; `when` is None for a
    check the claim needs everywhere, else the condition it tests (e.g. "sigmoid, depth 8")."""

    name: str
    ok: bool
    numbers: str
    when: str | None = None


def across_seeds(per_seed) -> tuple[bool, str]:
    """(True when every seed agrees the comparison holds, and 'k of K seeds')."""
    per_seed = [bool(v) for v in per_seed]
    return all(per_seed), f"{sum(per_seed)} of {len(per_seed)} seeds"


def verdict(checks: list[Check]) -> dict:
    """``{"word", "holds", "text", "checks"}``: the word is computed from the checks."""
    required = [c for c in checks if c.when is None]
    failed = [c for c in required if not c.ok]
    whens = dict.fromkeys(c.when for c in checks if c.when is not None)  # a condition holds when all its checks do
    good = [w for w in whens if all(c.ok for c in checks if c.when == w)]
    bad = [w for w in whens if w not in good]
    if failed or (whens and not good):
        word = "does not hold"
    elif bad:
        word = "holds only when " + "; ".join(good)
    else:
        word = "holds"
    lines = [f"Verdict: the claim {word}."]
    if good and bad and not failed:
        lines.append("Mixed evidence: it fails when " + "; ".join(bad) + ".")
    for c in checks:
        where = f" [{c.when}]" if c.when else ""
        lines.append(f"  {'yes' if c.ok else 'NO '} {c.name}{where}: {c.numbers}")
    return {"word": word, "holds": word == "holds", "text": "\n".join(lines),
            "checks": [asdict(c) for c in checks]}


# ---- output --------------------------------------------------------------------------------------
def format_table(rows: list[dict], columns: list[tuple]) -> str:
    """A plain-text table; `columns` are ``(key, header, format)``; missing prints '-'."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_atomic(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from others
    os.replace(tmp, path)


def finish(comm, args, results: dict, text: str, plots: dict | None = None) -> None:
    """On rank 0: draw `plots` ({file name: function(figure)}) into --out, print `text`
    and the verdict, write `results` (with the verdict and the plot paths) to --json."""
    if comm is not None and comm.rank != 0:
        return
    results = dict(results, config={k: v for k, v in vars(args).items() if k not in ("json", "out")})
    if args.out and plots:
        from plots import save
        results["plots"] = [save(draw, os.path.join(args.out, name)) for name, draw in plots.items()]
    v = results["verdict"]
    print(text + "\n\n" + v["text"], flush=True)
    if args.json:
        write_atomic(args.json, json.dumps(results, indent=1, default=float).encode())
