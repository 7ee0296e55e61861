"""The ``minidist`` commands that start processes: run, compare, lab, bench.

Each checks its own flags first (a bad value is one line, before anything starts), then
runs one child (mpiexec, or Python for single-process tools) and returns the child's exit
status, so ``minidist run -n 4 -- python x.py`` fails exactly when x.py does.
"""
from __future__ import annotations

import argparse
import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

from . import cli_mpiexec, shm_segments
from .cli_errors import ConfigError, launcher_size, positive_int

CHECKOUT = Path(__file__).resolve().parent.parent  # labs/ and scripts/ live beside the package
BENCHES = {  # name -> (script, launched under mpiexec -n N?, what it measures)
    "engine": ("scripts/bench_engine.py", False, "minidist's engine against PyTorch CPU"),
    "collectives": ("scripts/bench_collectives.py", True, "our collectives against MPI_Allreduce"),
    "ddp": ("scripts/bench_ddp.py", False, "minidist ddp/dp/hub against PyTorch DDP on gloo (it launches both; -- --ranks 2 4)"),
    "scaling": ("scripts/bench_scaling.py", False, "the scaling sweep over rank counts (-- --ranks 1 2 4)"),
}


def add_launch_options(p, default_n: int | None = None) -> None:
    p.add_argument("-n", "--np", dest="n", default=default_n, required=default_n is None,
                   help="number of ranks (MPI processes)")
    p.add_argument("--hostfile", default=None, help="hosts to place ranks on (a cluster); "
                   "MPICH's -f or Open MPI's --hostfile is chosen for you")
    p.add_argument("--mpi-args", default="", help='extra mpiexec arguments, quoted: "--bind-to core"')
    p.add_argument("--mpiexec", default=None,
                   help="a system mpiexec (default: the one in this venv, else PATH's)")


def add_run(p) -> None:
    add_launch_options(p)
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="what every rank runs, after --; a leading `python` is this venv's Python")


def _child(cmd, env=None) -> int:
    """Run `cmd`, pass Ctrl-C on to it, and return its exit status (130 after Ctrl-C). After
    a failed job, the shared-memory files it left in /dev/shm go (shm_segments.py)."""
    before = shm_segments.snapshot()
    proc = subprocess.Popen(cmd, env=env)
    try:
        status = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        status = 130
    if status != 0:
        shm_segments.remove_leaked(before, wait=2.0)  # the torn-down ranks may still be exiting
    return status


def _launch(args, argv) -> int:
    if launcher_size() > 1:
        raise ConfigError(f"minidist {args.command} starts its own mpiexec: run it without mpiexec "
                          f"(this process is one of {launcher_size()} ranks already)")
    n = positive_int("-n", args.n)
    cmd, env = cli_mpiexec.command(n, argv, mpiexec=args.mpiexec, hostfile=args.hostfile,
                                   mpi_args=args.mpi_args)
    return _child(cmd, env)


def cmd_run(args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise ConfigError("run: nothing to launch; give the command after --, e.g. "
                          "minidist run -n 4 -- python train.py")
    return _launch(args, argv)


def add_compare(p) -> None:
    from .compare_options import add_arguments

    add_launch_options(p, default_n="4")
    add_arguments(p)
    p.add_argument("--out", default=None, help="run folder (default: a new runs/<timestamp>/)")


def _forwarded(args) -> list[str]:
    """compare's own flags, as `minidist.compare` on every rank reads them again."""
    from .compare_options import add_arguments

    probe = argparse.ArgumentParser(add_help=False)
    add_arguments(probe)
    flags = []
    for action in probe._actions:
        value = getattr(args, action.dest)
        if isinstance(action, argparse._StoreFalseAction):
            flags += [] if value else [action.option_strings[0]]
        elif isinstance(action, argparse._StoreTrueAction):
            flags += [action.option_strings[0]] if value else []
        elif value is not None:
            text = ",".join(value) if isinstance(value, list) else str(value)
            flags += [action.option_strings[0], text]
    return flags + (["--debug"] if args.debug else [])


def cmd_compare(args) -> int:
    from .compare_options import new_run_folder, validate

    n = positive_int("-n", args.n)
    validate(args)  # once, here: a bad flag is one line before mpiexec starts
    folder = Path(args.out) if args.out is not None else new_run_folder()[1]
    argv = [sys.executable, "-m", "minidist.compare", *_forwarded(args), "--out", str(folder)]
    args.n = n
    return _launch(args, argv)


def add_lab(p) -> None:
    p.add_argument("names", nargs="*", metavar="NN", help="lab numbers to run, e.g. 01 09 (default: all)")
    p.add_argument("--full", action="store_true",
                   help="the labs' default settings (minutes) instead of their --quick versions")


def _script(relative: str, what: str) -> Path:
    path = CHECKOUT / relative
    if not path.is_file():
        raise ConfigError(f"{what}: {relative} is missing from this checkout ({CHECKOUT})")
    return path


def cmd_lab(args) -> int:
    script = _script("labs/run_all.py", "lab")
    only = ["--only", ",".join(args.names)] if args.names else []
    return _child([sys.executable, str(script), *only, *(["--full"] if args.full else [])])


def add_bench(p) -> None:
    p.add_argument("which", choices=list(BENCHES),
                   help="; ".join(f"{k}: {v[2]}" for k, v in BENCHES.items()))
    add_launch_options(p, default_n="2")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="-- ARGS", help="the script's own arguments")


def cmd_bench(args) -> int:
    relative, under_mpi, _ = BENCHES[args.which]
    script = _script(relative, f"bench {args.which}")
    if args.which in ("engine", "ddp") and importlib.util.find_spec("torch") is None:
        raise ConfigError(f"bench {args.which} compares with PyTorch, which is not installed: "
                          "pip install -e '.[torch]' (CPU build: torch==2.13.0)")
    argv = [sys.executable, str(script), *_bench_arguments(args)]
    return _launch(args, argv) if under_mpi else _child(argv)


def _bench_arguments(args) -> list[str]:
    """The script's own arguments (after ``--``); launch options written after the bench's
    name (``bench collectives -n 2 -- ...``) are read into `args` first."""
    rest = list(args.rest)
    head, tail = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
    launch = argparse.ArgumentParser(prog=f"minidist bench {args.which}", add_help=False)
    add_launch_options(launch, default_n=args.n)
    known, unknown = launch.parse_known_args(head)
    for name, value in vars(known).items():
        setattr(args, name, value if value not in (None, "") else getattr(args, name))
    return unknown + tail


def cmd_missing(args) -> int:
    raise ConfigError(f"{args.command}: {args.missing}")
