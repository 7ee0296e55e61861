"""``minidist exercise list | start NAME DIR | check DIR [NAME ...]`` (also
``python -m minidist.exercises ...``): the argparse wiring and the printed report.

`check` prints one line per case, a total, and the functions still not implemented;
it exits 0 only when every case of every graded exercise passes (1 otherwise, 2 when
there is nothing to grade).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from . import EXERCISES
from .scaffolds import SCAFFOLDS


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def cmd_list(args) -> int:
    for name, (filename, functions, about) in EXERCISES.items():
        print(f"{name:<10} {filename:<13} {', '.join(functions)}\n{'':<10} {about}")
    return 0


def cmd_start(args) -> int:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EXERCISES[args.name][0]
    if path.exists() and not args.force:
        print(f"{path} exists; it may hold your work. Pass --force to overwrite it with the scaffold, "
              "or start in another folder", file=sys.stderr)
        return 2
    _write_atomically(path, SCAFFOLDS[args.name])
    print(f"wrote {path}: fill in {', '.join(EXERCISES[args.name][1])}, then run "
          f"`minidist exercise check {folder} {args.name}`")
    return 0


def _show(_path, result) -> None:
    print(result.line(), flush=True)


def _grade(name: str, path: Path, args):
    """Grade one exercise, printing each case's line as it is known."""
    if name == "ring":  # minutes at worst (mpiexec launches): the lines come as cases finish
        from .ring_grader import grade_ring

        sizes = tuple(int(s) for s in args.ranks.split(",") if s)
        return grade_ring([path], sizes=sizes, case_timeout=args.timeout, show=_show)[path]
    from .norms import grade_batchnorm, grade_layernorm

    graded = (grade_batchnorm if name == "batchnorm" else grade_layernorm)(path)
    for result in graded.results:
        _show(path, result)
    return graded


def _chosen(folder: Path, names) -> list[str] | str:
    """The exercises to grade, or a message saying why there are none."""
    if names:
        missing = [f"{folder / EXERCISES[n][0]}" for n in names if not (folder / EXERCISES[n][0]).exists()]
        return f"no such file: {', '.join(missing)}" if missing else list(names)
    present = [n for n, (filename, _f, _a) in EXERCISES.items() if (folder / filename).exists()]
    return present or (f"{folder} holds none of " + ", ".join(f for f, _x, _y in EXERCISES.values())
                       + "; write one with `minidist exercise start NAME DIR`")


def cmd_check(args) -> int:
    folder = Path(args.dir)
    names = _chosen(folder, args.names)
    if isinstance(names, str):
        print(names, file=sys.stderr)
        return 2
    totals, not_implemented = [], []
    for name in names:
        path = folder / EXERCISES[name][0]
        print(f"{name} ({path})", flush=True)
        graded = _grade(name, path, args)
        results = graded.results
        not_implemented += graded.not_implemented
        totals.append((name, sum(r.passed for r in results), len(results)))
    passed, cases = sum(t[1] for t in totals), sum(t[2] for t in totals)
    print(f"total: {passed} of {cases} cases pass ("
          + ", ".join(f"{n} {p}/{c}" for n, p, c in totals) + ")")
    if not_implemented:
        print("not implemented: " + ", ".join(not_implemented))
    return 0 if passed == cases else 1


DESCRIPTION = ("Write the interview's NumPy BatchNorm, LayerNorm and ring all-reduce, and have them\n"
               "graded against minidist: one line per case, the first wrong quantity named.")
EXAMPLE = ("example:\n  minidist exercise start batchnorm mywork/\n"
           "  minidist exercise check mywork/            # every exercise whose file is there")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``exercise`` command (list / start / check) to `subparsers`."""
    parser = subparsers.add_parser("exercise",
                                   help="write and grade the BatchNorm, LayerNorm and ring exercises",
                                   description=DESCRIPTION, epilog=EXAMPLE,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    _fill(parser)
    return parser


def _fill(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="exercise_command", required=True)
    p = sub.add_parser("list", help="the exercises and the functions each asks for")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("start", help="write the scaffold DIR/NAME.py")
    p.add_argument("name", choices=list(EXERCISES))
    p.add_argument("dir")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(fn=cmd_start)
    p = sub.add_parser("check", help="grade DIR's files against minidist (exit 0: all pass)")
    p.add_argument("dir")
    p.add_argument("names", nargs="*", choices=[[]] + list(EXERCISES), metavar="NAME",
                   help="exercises to grade (default: every one whose file is in DIR): "
                   + ", ".join(EXERCISES))
    p.add_argument("--ranks", default="1,2,3,4,5", help="ring: the mpiexec -n sizes (default 1,2,3,4,5)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="ring: seconds without a finished case before the job counts as a hang")
    p.set_defaults(fn=cmd_check)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidist.exercises", description=DESCRIPTION,
                                     epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _fill(parser)
    args = parser.parse_args(argv)
    return args.fn(args)
