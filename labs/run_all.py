"""Run every lab with --quick (under mpiexec where it needs ranks) and print one verdict
line per lab.

    python labs/run_all.py                       # all ten, --quick
    python labs/run_all.py --only 06,09 --out /tmp/labs --json /tmp/labs
    python labs/run_all.py --full                # the labs' own default settings (minutes)

`LABS` lists each lab's file and the ranks it runs on; `launch` is what the tests and
`make_docs.py` use too.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LABS = {  # number: (file, ranks: 1 = plain python)
    "01": ("01_norm_axes.py", 2), "02": ("02_tiny_batch.py", 4), "03": ("03_bn_placement.py", 1),
    "04": ("04_affine_fold.py", 1), "05": ("05_deep_sigmoid.py", 1), "06": ("06_dp_rank0.py", 4),
    "07": ("07_dp_root_loss.py", 4), "08": ("08_hub_vs_dp.py", 4), "09": ("09_ring_allreduce.py", 4),
    "10": ("10_dp_vs_ddp_projection.py", 1),
}


def command(script: str, ranks: int, *args: str) -> list[str]:
    """The command line of a lab: plain python, or mpiexec -n ranks python."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else (shutil.which("mpiexec") or "mpiexec")
    base = [sys.executable, str(HERE / script), *args]
    return base if ranks == 1 else [mpiexec, "-n", str(ranks), *base]


def launch(script: str, ranks: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a lab with one BLAS thread per rank and the checkout on PYTHONPATH."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(command(script, ranks, *args), env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def verdict_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("Verdict:")]
    return lines[-1] if lines else "no verdict printed"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, help="lab numbers, comma-separated (default: all)")
    p.add_argument("--full", action="store_true", help="the labs' default settings instead of --quick")
    p.add_argument("--out", default=None, metavar="DIR", help="PNG plots go there")
    p.add_argument("--json", default=None, metavar="DIR", help="each lab's JSON goes there (NN.json)")
    args = p.parse_args(argv)
    chosen = [n.strip().zfill(2) for n in args.only.split(",")] if args.only else list(LABS)
    unknown = [n for n in chosen if n not in LABS]
    if unknown:
        p.error(f"no lab {unknown}: choose from {', '.join(LABS)}")
    failures, t0 = 0, time.perf_counter()
    for number in chosen:
        script, ranks = LABS[number]
        extra = ([] if args.full else ["--quick"]) + (["--out", args.out] if args.out else [])
        extra += ["--json", os.path.join(args.json, f"{number}.json")] if args.json else []
        start = time.perf_counter()
        proc = launch(script, ranks, *extra)
        line = verdict_line(proc.stdout) if proc.returncode == 0 else f"FAILED (exit {proc.returncode}): " + (
            proc.stderr.strip().splitlines() or ["no message"])[-1]
        failures += proc.returncode != 0
        print(f"lab {number} ({script}, {ranks} rank{'s' if ranks > 1 else ''}, "
              f"{time.perf_counter() - start:.0f} s): {line.removeprefix('Verdict: ')}", flush=True)
    print(f"{len(chosen)} labs in {time.perf_counter() - t0:.0f} s, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
