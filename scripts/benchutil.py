"""Helpers shared by the benchmark scripts (bench_engine, bench_ddp, bench_collectives).

    from benchutil import tune_malloc, malloc_note, paired, ratio_stats, torch_available
    tuned = tune_malloc()                  # before the first big allocation
    a, b = paired(run_a, run_b, pairs=5)   # A B B A ... in separate processes
    print(ratio_text(ratio_stats(a, b)))

A worker process reports one JSON object as its last line of output (`emit`); `run_json`
launches one and reads it back. `MINIDIST_BENCH_NO_TORCH=1` makes `torch_available()` answer
False, as if torch were not installed (to exercise the scripts' torch-less path).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np

NO_TORCH_VAR = "MINIDIST_BENCH_NO_TORCH"


def tune_malloc() -> bool:
    """glibc keeps freed memory (mallopt; minidist's default under MPI, see
    minidist/allocator.py). For both sides of a comparison. Returns whether it took effect."""
    from minidist.allocator import keep_freed_memory

    return keep_freed_memory()


def malloc_note(requested: bool, tuned: bool) -> str:
    """One phrase for a report header: which malloc the numbers were measured with."""
    if not requested:
        return "default glibc malloc"
    return "glibc malloc tuned (mallopt)" if tuned else "malloc tuning unavailable"


def torch_available() -> bool:
    """Whether torch is installed (and MINIDIST_BENCH_NO_TORCH is not set), without
    importing it: a parent that imported torch would pass its peak memory on to the
    workers it starts (ru_maxrss survives fork and exec)."""
    if os.environ.get(NO_TORCH_VAR, "") not in ("", "0"):
        return False
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: VmHWM of /proc/self/status (reset by
    exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def emit(obj) -> None:
    """A worker's result: one JSON line, last on stdout."""
    print(json.dumps(obj), flush=True)


def run_json(cmd, env=None, timeout=600):
    """Run a worker command; its last stdout line parsed as JSON (raises with its output
    when it fails)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def paired(run_a, run_b, pairs: int):
    """Call run_a and run_b alternately A B B A A B ... (`pairs` of each): a neighbour's
    load drifting over time hits both alike. Returns (results of A, results of B)."""
    a, b = [], []
    for i in range(pairs):
        order = ((run_a, a), (run_b, b)) if i % 2 == 0 else ((run_b, b), (run_a, a))
        for run, out in order:
            out.append(run())
    return a, b


def ratio_stats(a, b) -> dict:
    """Pairwise ratios a[i] / b[i]: their median, min and max."""
    r = np.asarray(a, float) / np.asarray(b, float)
    return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()), "n": len(r)}


def ratio_text(stats: dict) -> str:
    return f"{stats['median']:.2f} (min {stats['min']:.2f}, max {stats['max']:.2f}, {stats['n']} pairs)"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def one_thread_env(threads: int = 1) -> dict:
    """Environment variables fixing BLAS/OpenMP threads for a worker process."""
    return {v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def python() -> str:
    return sys.executable
