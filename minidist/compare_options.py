"""The strategy comparison's options: one parser, checked before any collective.

`add_arguments` serves both ``minidist compare`` and ``scripts/compare.py``; `validate`
turns every impossible value into a `ConfigError` naming the flag and the value, and
`run_paths` decides where a run is kept: ``--out DIR`` (default ``runs/<timestamp>/``)
holds ``run.jsonl`` and the report; ``--out RUN.jsonl`` keeps the older layout, the
report in ``RUN-report/`` beside it.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from .cli_errors import ConfigError, choice_list, positive_float, positive_int, warn

VARIANTS = {  # name -> (strategy, wrap options)
    "local": ("local", {}),
    "dp": ("dp", {}),
    "dp-scatter": ("dp", {"scatter_inputs": True}),
    "dp-root": ("dp", {"loss_on_root": True}),
    "hub": ("hub", {}),
    "ddp": ("ddp", {}),
    "ddp-no-overlap": ("ddp", {"overlap": False}),
    "ddp-fp16": ("ddp", {"comm_hook": "fp16", "average": "ranks"}),
}
MLP_CLASSES = 3  # spirals: --samples // 3 points per class


def add_arguments(p) -> None:
    """compare's flags (without --out, whose meaning differs between the two entry points)."""
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="mlp: 2-D spirals, 3 classes; cnn: 16x16 synthetic images, 10 classes")
    p.add_argument("--norm", choices=("none", "batch", "sync", "layer"), default="none",
                   help="normalisation layer after each hidden layer")
    p.add_argument("--strategies", default="local,dp,hub,ddp",
                   help=f"comma-separated, from {', '.join(VARIANTS)} (local is always added)")
    p.add_argument("--steps", default="20", help="training steps per strategy")
    p.add_argument("--batch", default="64", help="global batch size, split across the ranks")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="parameter and data type (float64: differences are pure round-off)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="SGD with momentum, or Adam")
    p.add_argument("--lr", default=None, help="learning rate (default: 0.1 for sgd, 1e-3 for adam)")
    p.add_argument("--momentum", default="0.9", help="SGD momentum, in [0, 1)")
    p.add_argument("--hidden", default="512",
                   help="MLP hidden width (512: 265 k parameters, enough bytes for dp's rank-0 hot spot "
                        "to show against DDP's even load)")
    p.add_argument("--bucket-cap-mb", default="25", help="DDP bucket size in MiB")
    p.add_argument("--average", choices=("samples", "ranks"), default="samples",
                   help="weight each rank's gradient by its samples, or PyTorch's equal rank weights")
    p.add_argument("--samples", default="1200", help="dataset size")
    p.add_argument("--seed", default="0", help="seed of the weights and of the shuffle")
    p.add_argument("--profile", default=None,
                   help="cost profile (name or calibrated JSON) for the report's predicted times; "
                        "default: $MINIDIST_PROFILE, else calibrated here in < 3 s (cached per host "
                        "and rank count; docs/timing.md)")
    p.add_argument("--recalibrate", action="store_true",
                   help="measure this machine's profile afresh instead of using the cached one")
    p.add_argument("--checkpoint", metavar="DIR", default=None,
                   help="after training, save each strategy's checkpoint to DIR/<strategy>.npz")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="start each strategy from DIR/<strategy>.npz (a --checkpoint of an earlier run "
                        "with the same options) and train --steps more")
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="skip the report, which is made by default (minidist report RUN makes it later)"
                        "%(default).0s")  # (no "default: True" appended: it would read as "skipped")


def dataset_size(model: str, samples: int) -> int:
    """How many examples `--samples` gives (spirals: a multiple of the class count)."""
    return (samples // MLP_CLASSES) * MLP_CLASSES if model == "mlp" else samples


def validate(args) -> None:
    """Check and convert every flag in place; a ConfigError names the first bad one."""
    args.strategies = choice_list("--strategies", args.strategies, VARIANTS)
    args.strategies = list(dict.fromkeys(["local"] + args.strategies))
    args.steps = positive_int("--steps", args.steps)
    args.samples = positive_int("--samples", args.samples)
    args.batch = positive_int("--batch", args.batch)
    args.hidden = positive_int("--hidden", args.hidden)
    args.seed = positive_int("--seed", args.seed, minimum=0)
    args.momentum = positive_float("--momentum", args.momentum, allow_zero=True, upper=1.0)
    args.bucket_cap_mb = positive_float("--bucket-cap-mb", args.bucket_cap_mb)
    default_lr = 0.1 if args.optimizer == "sgd" else 1e-3
    args.lr = default_lr if args.lr is None else positive_float("--lr", args.lr)
    have = dataset_size(args.model, args.samples)
    if have < 1:
        raise ConfigError(f"--samples {args.samples}: the {args.model} dataset needs at least "
                          f"{MLP_CLASSES} samples (one per class)")
    if args.batch > have:
        raise ConfigError(f"--batch {args.batch}: larger than the dataset ({have} samples from "
                          f"--samples {args.samples}); lower --batch or raise --samples")
    from .cli_errors import profile_option

    args.profile_obj = profile_option("--profile", args.profile, "shm")
    missing = [v for v in args.strategies
               if args.resume and not os.path.isfile(os.path.join(args.resume, f"{v}.npz"))]
    if missing:
        raise ConfigError(f"--resume {args.resume}: no checkpoint for {missing}; expected "
                          f"{args.resume}/<strategy>.npz for every strategy, written by a run with --checkpoint")
    out = getattr(args, "out", None)
    if out is not None and os.path.isdir(out) == str(out).endswith(".jsonl") and os.path.exists(out):
        raise ConfigError(f"--out {out}: exists as a {'folder' if os.path.isdir(out) else 'file'}; "
                          "give a run folder or a RUN.jsonl file path")


def warn_about(args, size: int, cores: int | None = None) -> None:
    """Warnings that do not stop the run, said once on rank 0."""
    cores = cores or available_cores()
    if size == 1:
        warn("running on 1 rank: no strategy moves a byte and every one equals the reference "
             "trivially; use `minidist compare -n 4` (or `mpiexec -n 4 python scripts/compare.py`)")
        return
    if args.batch < size:
        warn(f"--batch {args.batch} on {size} ranks leaves {size - args.batch} rank(s) with an empty "
             f"shard every step; use --batch {size} or more")
    elif args.batch % size:
        base = args.batch // size
        warn(f"--batch {args.batch} does not divide over {size} ranks: shards of {base + 1} and {base} "
             f"samples (gradients are weighted by shard size)")
    if cores and size > cores:
        warn(f"{size} ranks on {cores} cores: results are exact, but timings include waiting for a core")


def run_paths(out: str | None, now: datetime | None = None) -> tuple[Path, Path]:
    """(run JSONL, report folder) for `--out`: a ``.jsonl`` file (report in ``STEM-report/``
    beside it) or a folder (default: a new ``runs/<timestamp>/``, never an existing one)."""
    if out is not None and str(out).endswith(".jsonl"):
        run = Path(out)
        return run, run.with_name(run.stem + "-report")
    if out is None:
        return new_run_folder(now)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; give a folder or a .jsonl path")
    return folder / "run.jsonl", folder


def new_run_folder(now: datetime | None = None, parent: str = "runs") -> tuple[Path, Path]:
    """Create ``runs/<timestamp>/`` (``-2``, ``-3``, ... when taken, even by a run started
    in the same second) and return (its run.jsonl, itself)."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    Path(parent).mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        folder = Path(parent) / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder / "run.jsonl", folder
    raise ConfigError(f"{parent}/{stamp}: 999 run folders already; give --out DIR")


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
