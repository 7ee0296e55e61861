"""Turn a comparison run into a report: ``report.md``, a self-contained ``report.html``
and PNG plots (each with its series as JSON), in one folder.

    minidist report runs/2026-11-30_09-00-00/        # a run folder, or a run.jsonl file
    write_report("runs/x/run.jsonl", "out/")         # the same from Python

The report answers the comparison's three questions: do the strategies compute the same
parameters, what does each cost per rank (bytes, messages, time, memory), and how does
that grow past this machine. The sections are `sections.SECTIONS`; the HTML adds the
configuration, the environment and "what this run shows" (`findings`) at the top.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import write_text
from .summary import (LARGE_MODEL, LARGE_MODEL_TENSORS, PROJECTION_SIZES, human_bytes, load_run,
                      phase_rows, predicted_vs_measured, strategy_rows)

__all__ = ["write_report", "equal_tolerance", "load_run", "strategy_rows", "phase_rows",
           "predicted_vs_measured", "resolve_run", "print_summary", "human_bytes",
           "LARGE_MODEL", "LARGE_MODEL_TENSORS", "PROJECTION_SIZES"]

EQUAL_TOL = 1e-10  # float64 runs: the bound for "the same parameters"


def equal_tolerance(dtype) -> float:
    """Largest parameter difference still read as round-off: 1e-10, or 1000 machine epsilons
    of the run's dtype where that is larger (float32: 1.2e-4)."""
    return max(EQUAL_TOL, 1000 * float(np.finfo(np.dtype(dtype)).eps))


def print_summary(comm, loss=None) -> None:
    """Every rank calls it; rank 0 prints each rank's loss and ledger per phase (`console`)."""
    from .console import print_summary as _print

    _print(comm, loss)


def resolve_run(path) -> tuple[Path, Path]:
    """(run JSONL, default report folder) for a run folder or a run file. A folder holds
    ``run.jsonl`` and its report; ``X.jsonl`` elsewhere gets ``X-report/`` beside it."""
    path = Path(path)
    if path.is_dir():
        run = path / "run.jsonl"
        if not run.is_file():
            raise FileNotFoundError(2, "no run.jsonl in this folder (is it a run folder?)", str(path))
        return run, path
    if not path.is_file():
        raise FileNotFoundError(2, "no such run file or folder", str(path))
    return path, (path.parent if path.name == "run.jsonl" else path.with_name(path.stem + "-report"))


def _profiles(header, profile, projection_profile):
    """(this machine's Profile, the projections' Profile): given ones, else $MINIDIST_PROFILE,
    else the one the run recorded, else shm; projections: ib-hdr unless given."""
    import os

    from ..cli_errors import profile_option
    from ..cost.profiles import Profile

    if profile is None and not os.environ.get("MINIDIST_PROFILE") and header.get("profile"):
        profile = Profile.from_dict(header["profile"])
    if not isinstance(profile, Profile):
        profile = profile_option("--profile", profile, "shm")
    if not isinstance(projection_profile, Profile):
        projection_profile = profile_option("--projection-profile", projection_profile or "ib-hdr", "ib-hdr")
    return profile, projection_profile


def write_report(run, out_dir=None, profile=None, projection_profile=None) -> Path:
    """Write ``report.md``, ``report.html`` and the plots for the run at `run` (a run folder
    or JSONL file); returns the Markdown report's path. `profile` (a Profile, name or JSON
    file) predicts this run's times; `projection_profile` the projections."""
    from . import html
    from .sections import SECTIONS, Context

    run, default_out = resolve_run(run)
    out = Path(out_dir) if out_dir is not None else default_out
    out.mkdir(parents=True, exist_ok=True)
    header, steps = load_run(run)
    profile, projection_profile = _profiles(header, profile, projection_profile)
    ctx = Context(run=run, out=out, header=header, steps=steps, rows=strategy_rows(header, steps),
                  tolerance=equal_tolerance(header["config"].get("dtype", "float64")),
                  profile=profile, projection_profile=projection_profile)
    lines = []
    for section in SECTIONS:
        lines += section(ctx)
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")  # atomically: a killed run leaves the old report
    write_text(out / "report.html", html.render(ctx, lines))
    return path
