"""What the labs share: their command line, a loader that runs a fixed number of steps,
small reductions of one number across ranks, and the printed table / JSON output.

Every lab prints on rank 0 only and, with ``--json PATH``, writes the numbers behind its
table and its conclusion (rank 0), so a test can assert on them.
"""
from __future__ import annotations

import argparse
import json
import os

import minidist  # noqa: F401  (first: under mpiexec it sets one BLAS thread per rank before NumPy loads)
import numpy as np  # noqa: E402

from minidist.comm import allreduce  # noqa: E402

TOLERANCE = 1e-9  # "the same to round-off" for float64 runs of a few dozen steps


def lab_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every lab has: --quick, --json, --seed."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a few steps on a small model: seconds, for the tests")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON (rank 0)")
    p.add_argument("--seed", type=int, default=0)
    return p


def int_list(text: str) -> list[int]:
    """'2,4,8' -> [2, 4, 8] (for argparse)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (got {text!r})") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers (got {text!r})")
    return values


class StepLoader:
    """``StepLoader(loader, steps)``: exactly `steps` batches of `loader`, running through
    as many epochs as that takes (``loader.set_epoch(e)`` before each, so the shuffle is
    the one `DistributedSampler` / `DataLoader` give for epoch e). Lets `Trainer.train_epoch`
    run a fixed number of steps whatever the batch size."""

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


def format_table(rows: list[dict], columns: list[tuple]) -> str:
    """A plain-text table; `columns` are ``(key, header, format)``, e.g. ``("acc", "eval
    accuracy", "{:.3f}")``. A missing value prints as "-"."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def finish(comm, args, results: dict, text: str) -> None:
    """Print `text` (tables and the conclusion) and write `results` to --json, on rank 0."""
    if comm is not None and comm.rank != 0:
        return
    print(text, flush=True)
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def verdict(checks: dict) -> tuple[bool, str]:
    """``(all passed, "holds" | "does NOT hold (failed: ...)")`` for a dict of named
    booleans computed from a lab's numbers."""
    failed = [name for name, ok in checks.items() if not ok]
    return not failed, "holds" if not failed else f"does NOT hold here (failed: {', '.join(failed)})"
