"""The ``minidist`` command.

    minidist predict --params 125e6 --profile ib-hdr --ranks 2,8,64,512,4096
        predicted per-step communication, bytes and rank-0 memory of dp, hub and ddp
    minidist profiles
        the named hardware profiles and their sources
    minidist calibrate --out profile.json          (under mpiexec -n 2 or more)
        fit alpha, beta, gamma and the node bandwidth on this machine
    minidist report runs/compare.jsonl --out runs/report
        Markdown report and PNG plots of a `scripts/compare.py` run

The strategy comparison itself runs under MPI: ``mpiexec -n 4 python scripts/compare.py``.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def _sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s]


def cmd_predict(args) -> int:
    from .cost.profiles import get_profile, load_profile
    from .cost.stepcost import dense, projection
    from .report.summary import human_bytes as _human

    profile = load_profile(args.profile) if args.profile.endswith(".json") else get_profile(args.profile)
    shape = dense(int(float(args.params)), np.dtype(args.dtype), n_tensors=args.tensors)
    rows = projection(shape, sizes=_sizes(args.ranks), strategies=args.strategies.split(","),
                      profile=profile, bucket_cap_mb=args.bucket_cap_mb,
                      optimizer_slots=args.optimizer_slots)
    print(f"# {int(float(args.params)):,} {args.dtype} parameters ({_human(shape.param_bytes)}), "
          f"profile {profile.name}: predicted communication per training step")
    print(f"{'strategy':>8} {'ranks':>6} {'comm time':>11} {'rank 0 moves':>13} "
          f"{'other ranks move':>16} {'rank 0 peak memory':>19}")
    for r in rows:
        print(f"{r['strategy']:>8} {r['size']:>6} {r['seconds'] * 1e3:>8.2f} ms {_human(r['rank0_bytes']):>13} "
              f"{_human(r['other_bytes']):>16} {_human(r['rank0_peak_bytes']):>19}")
    return 0


def cmd_profiles(args) -> int:
    from .cost.profiles import PROFILES

    for p in PROFILES.values():
        node = "" if p.node_bw is None else f", node {p.node_bw / 1e9:.0f} GB/s shared by {p.ranks_per_node} ranks"
        print(f"{p.name}: alpha {p.alpha * 1e6:.2f} us, {1 / p.beta / 1e9:.1f} GB/s per link, "
              f"gamma {1 / p.gamma / 1e9:.0f} GB/s{node}\n    {p.source}")
    return 0


def cmd_calibrate(args) -> int:
    from .comm import Communicator
    from .cost.calibrate import calibrate
    from .cost.profiles import save_profile

    comm = Communicator()
    profile = calibrate(comm, quick=args.quick)
    if comm.rank == 0:
        save_profile(profile, args.out)
        print(f"alpha {profile.alpha * 1e6:.2f} us, beta {1 / profile.beta / 1e9:.2f} GB/s, "
              f"gamma {1 / profile.gamma / 1e9:.2f} GB/s -> {args.out}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    path = write_report(args.run, args.out)
    print(f"report: {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="minidist", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predicted per-step cost of dp, hub and ddp")
    p.add_argument("--params", default="125e6", help="number of parameters (default 125e6)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--tensors", type=int, default=100, help="parameter tensors (DDP's buckets)")
    p.add_argument("--ranks", default="2,8,64,512,4096")
    p.add_argument("--strategies", default="dp,hub,ddp")
    p.add_argument("--profile", default="ib-hdr", help="a named profile or a calibrated .json")
    p.add_argument("--bucket-cap-mb", type=float, default=25.0)
    p.add_argument("--optimizer-slots", type=int, default=1, help="1: SGD momentum, 2: Adam")
    p.set_defaults(fn=cmd_predict)
    p = sub.add_parser("profiles", help="list the named hardware profiles")
    p.set_defaults(fn=cmd_profiles)
    p = sub.add_parser("calibrate", help="fit a profile on this machine (run under mpiexec)")
    p.add_argument("--out", default="profile.json")
    p.add_argument("--quick", action="store_true")
    p.set_defaults(fn=cmd_calibrate)
    p = sub.add_parser("report", help="Markdown report and plots of a compare.py run")
    p.add_argument("run", help="the JSONL file compare.py wrote")
    p.add_argument("--out", default=None, help="folder (default: beside the run)")
    p.set_defaults(fn=cmd_report)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
