"""The ``minidist`` commands about cost: report, predict, profiles, calibrate.

Every flag is checked before anything runs (calibrate: before MPI starts), and a bad
value is a `ConfigError` naming the flag and the value. ``--profile`` takes a profile
name or a JSON file (`minidist calibrate` writes one) and defaults to $MINIDIST_PROFILE.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .cli_errors import (ConfigError, choice_list, int_list, launcher_size, positive_float, positive_int,
                         profile_option)

FLOAT_DTYPES = ("float16", "float32", "float64")
PREDICTED = ("dp", "hub", "ddp")


def add_report(p) -> None:
    p.add_argument("run", help="a run folder (holding run.jsonl) or a run .jsonl file")
    p.add_argument("--out", default=None, help="report folder (default: the run folder, or RUN-report/)")
    p.add_argument("--profile", default=None, help="profile for the predicted times, a name or a JSON "
                   "file (default: $MINIDIST_PROFILE, else the run's, else shm)")
    p.add_argument("--projection-profile", default="ib-hdr", help="profile of the projections")


def cmd_report(args) -> int:
    from .report import resolve_run, write_report

    run, _ = resolve_run(args.run)  # a missing path is one line, not a traceback
    profile = None if args.profile is None else profile_option("--profile", args.profile, "shm")
    projection = profile_option("--projection-profile", args.projection_profile, "ib-hdr")
    try:
        path = write_report(run, args.out, profile=profile, projection_profile=projection)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{args.run}: not a readable comparison run ({type(exc).__name__}: {exc})") from None
    print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


def add_predict(p) -> None:
    from .report import LARGE_MODEL, LARGE_MODEL_TENSORS

    p.add_argument("--model", choices=("mlp", "cnn"), default=None,
                   help="predict compare's own model (same shapes as `minidist compare`) instead of "
                        "--params/--tensors")
    p.add_argument("--hidden", default="512", help="with --model mlp: the hidden width (compare's default)")
    p.add_argument("--params", default=None, help=f"number of parameters (default {LARGE_MODEL:.3g})")
    p.add_argument("--tensors", default=None,
                   help=f"parameter tensors they are split into (DDP's buckets; default {LARGE_MODEL_TENSORS}, "
                        "the report's projection uses the same)")
    p.add_argument("--dtype", default=None, help=f"parameter dtype, one of {', '.join(FLOAT_DTYPES)} "
                   "(default: float64 with --model, as compare; float32 with --params)")
    p.add_argument("--ranks", default="2,8,64,512,4096", help="comma-separated rank counts")
    p.add_argument("--strategies", default="dp,hub,ddp", help="comma-separated, from dp, hub, ddp")
    p.add_argument("--profile", default=None,
                   help="a named profile or a calibrated .json (default: $MINIDIST_PROFILE, else ib-hdr)")
    p.add_argument("--bucket-cap-mb", default="25", help="DDP bucket size in MiB")
    p.add_argument("--optimizer-slots", default="1", help="optimizer state per parameter: 0 plain "
                   "SGD, 1 SGD momentum, 2 Adam")


def _predict_shape(args):
    """(ModelShape, description) from --model or from --params/--tensors/--dtype."""
    import numpy as np

    from .cost.stepcost import dense, describe
    from .report import LARGE_MODEL, LARGE_MODEL_TENSORS

    args.dtype = args.dtype or ("float64" if args.model is not None else "float32")
    if args.dtype not in FLOAT_DTYPES:
        raise ConfigError(f"--dtype {args.dtype!r}: parameters are floating point; choose from "
                          f"{', '.join(FLOAT_DTYPES)}")
    if args.model is not None:
        if args.params is not None or args.tensors is not None:
            raise ConfigError(f"--model {args.model} with --params/--tensors: give one or the other")
        from .compare import make_model

        args.hidden, args.seed = positive_int("--hidden", args.hidden), 0
        shape = describe(make_model(args, None, "none"))
        count = sum(c for c, _ in shape.params)
        return shape, f"compare's {args.model} model: {count:,} {args.dtype} parameters in {len(shape.params)} tensors"
    params = positive_int("--params", LARGE_MODEL if args.params is None else args.params)
    tensors = positive_int("--tensors", LARGE_MODEL_TENSORS if args.tensors is None else args.tensors)
    if tensors > params:
        raise ConfigError(f"--tensors {tensors}: more tensors than --params {params}")
    return (dense(params, np.dtype(args.dtype), n_tensors=tensors),
            f"{params:,} {args.dtype} parameters in {tensors} tensors")


def cmd_predict(args) -> int:
    from .cost.stepcost import projection
    from .report import human_bytes

    shape, what = _predict_shape(args)
    sizes = int_list("--ranks", args.ranks)
    strategies = choice_list("--strategies", args.strategies, PREDICTED)
    bucket = positive_float("--bucket-cap-mb", args.bucket_cap_mb)
    slots = positive_int("--optimizer-slots", args.optimizer_slots, minimum=0)
    profile = profile_option("--profile", args.profile, "ib-hdr")
    rows = projection(shape, sizes=sizes, strategies=strategies, profile=profile,
                      bucket_cap_mb=bucket, optimizer_slots=slots)
    print(f"# {what} ({human_bytes(shape.param_bytes)}), profile {profile.name}: predicted "
          f"communication per training step (compute excluded)")
    print(f"{'strategy':>8} {'ranks':>6} {'comm time':>14} {'rank 0 moves':>13} "
          f"{'other ranks move':>16} {'rank 0 peak memory':>19}")
    for r in rows:
        print(f"{r['strategy']:>8} {r['size']:>6} {r['seconds'] * 1e3:>11.3f} ms {human_bytes(r['rank0_bytes']):>13} "
              f"{human_bytes(r['other_bytes']):>16} {human_bytes(r['rank0_peak_bytes']):>19}")
    return 0


def cmd_profiles(args) -> int:
    from .cost.profiles import PROFILES

    chosen = os.environ.get("MINIDIST_PROFILE")
    print(f"MINIDIST_PROFILE={chosen!r} (the default of every --profile)" if chosen else
          "MINIDIST_PROFILE is not set (--profile defaults: shm for a run's times, ib-hdr for projections)")
    for p in PROFILES.values():
        node = "" if p.node_bw is None else f", node {p.node_bw / 1e9:.0f} GB/s shared by {p.ranks_per_node} ranks"
        print(f"{p.name}: alpha {p.alpha * 1e6:.2f} us, {1 / p.beta / 1e9:.1f} GB/s per link, "
              f"gamma {1 / p.gamma / 1e9:.0f} GB/s{node}\n    {p.source}")
    return 0


def add_calibrate(p) -> None:
    from .cli_launch import add_launch_options

    add_launch_options(p, default_n="2")
    p.add_argument("--out", default="profile.json", help="where the profile (JSON) is written")
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats (seconds, noisier)")


def cmd_calibrate(args) -> int:
    out = Path(args.out)
    if out.is_dir() or not out.parent.resolve().is_dir():
        raise ConfigError(f"--out {args.out}: give a file path in an existing folder")
    if launcher_size() == 1:  # not under mpiexec yet: start the job on -n ranks
        from .cli_launch import _launch

        if positive_int("-n", args.n) < 2:
            raise ConfigError(f"-n {args.n}: calibration measures messages between ranks; use -n 2 or more")
        return _launch(args, [sys.executable, "-m", "minidist.cli", "calibrate", "--out", str(out),
                              *(["--quick"] if args.quick else [])])
    return _calibrate_here(out, args.quick)


def _calibrate_here(out: Path, quick: bool) -> int:
    from .comm import Communicator
    from .cost.calibrate import calibrate
    from .cost.profiles import save_profile

    comm = Communicator()
    profile = calibrate(comm, quick=quick)
    if comm.rank == 0:
        save_profile(profile, out)  # atomically
        print(f"alpha {profile.alpha * 1e6:.2f} us, beta {1 / profile.beta / 1e9:.2f} GB/s, "
              f"gamma {1 / profile.gamma / 1e9:.2f} GB/s -> {out} (use: --profile {out} or "
              f"MINIDIST_PROFILE={out})")
    return 0
