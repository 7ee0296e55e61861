"""minidist: train one model under local, dp, hub and ddp, and see what each costs.

  minidist compare -n 4                      the strategy comparison, kept in runs/<timestamp>/
  minidist run -n 4 -- python train.py       launch any script on 4 ranks (like torchrun)
  minidist report runs/<timestamp>/          rebuild a run's report (Markdown + HTML + plots)
  minidist predict --params 125e6            per-step communication of dp, hub, ddp at scale
  minidist profiles | calibrate | lab | exercise | bench

`minidist COMMAND --help` shows each command's options, defaults and an example.
Errors are one line (--debug or MINIDIST_DEBUG=1 for the traceback). Profiles:
--profile NAME|FILE, default $MINIDIST_PROFILE.
"""
from __future__ import annotations

import sys

from . import cli_cost, cli_launch
from .cli_errors import ConfigError, Parser, fail, run_guarded


def _add(sub, name: str, fn, help: str, example: str):
    """A subcommand whose --help shows `help`, then `example` under "example:"."""
    description = f"{help[0].upper()}{help[1:]}.\n\nexample:\n  {example}"
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("--debug", action="store_true", help="show tracebacks (also MINIDIST_DEBUG=1)")
    p.set_defaults(fn=fn)
    return p


def _add_exercise(sub) -> None:
    try:
        from .exercises.cli import add_parser
    except ImportError:
        p = _add(sub, "exercise", cli_launch.cmd_missing, "write and grade the NumPy/MPI exercises",
                 "minidist exercise start batchnorm my_exercises/")
        p.add_argument("rest", nargs="*", help="the exercise command's arguments")
        p.set_defaults(missing="minidist/exercises/ (the exercises package) is not in this checkout")
        return
    add_parser(sub)


def build_parser() -> Parser:
    parser = Parser(prog="minidist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_launch.add_run(_add(sub, "run", cli_launch.cmd_run, "launch a script on N ranks under mpiexec",
                            "minidist run -n 4 -- python train.py --epochs 2"))
    cli_launch.add_compare(_add(sub, "compare", cli_launch.cmd_compare,
                                "compare the strategies on N ranks and keep the run folder",
                                "minidist compare -n 4 --model cnn --norm sync --steps 10"))
    cli_cost.add_report(_add(sub, "report", cli_cost.cmd_report,
                             "write report.md, report.html and the plots of a run",
                             "minidist report runs/2026-11-30_09-00-00/"))
    cli_cost.add_predict(_add(sub, "predict", cli_cost.cmd_predict,
                              "predicted per-step communication, bytes and memory of dp, hub and ddp",
                              "minidist predict --params 125e6 --tensors 148 --ranks 8,64,512"))
    _add(sub, "profiles", cli_cost.cmd_profiles, "list the named hardware profiles and their sources",
         "minidist profiles")
    cli_cost.add_calibrate(_add(sub, "calibrate", cli_cost.cmd_calibrate,
                                "fit alpha, beta, gamma (a profile) on this machine",
                                "minidist calibrate -n 2 --out profile.json"))
    cli_launch.add_lab(_add(sub, "lab", cli_launch.cmd_lab, "run the teaching labs (labs/run_all.py)",
                            "minidist lab 04 09"))
    _add_exercise(sub)
    cli_launch.add_bench(_add(sub, "bench", cli_launch.cmd_bench,
                              "benchmarks against MPI_Allreduce, PyTorch CPU and PyTorch DDP",
                              "minidist bench collectives -n 2"))
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except ConfigError as exc:
        return fail(exc, debug)
    return run_guarded(args.fn, args, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
