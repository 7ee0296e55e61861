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


def minidist_tunes_malloc() -> tuple[bool, bool]:
    """(requested, in effect): whether `import minidist` was to tune malloc in this process
    (its default as one of several ranks; ``MINIDIST_MALLOC=default`` turns it off), and
    whether malloc is tuned now."""
    from minidist import allocator
    from minidist.launcher import launcher_size

    return launcher_size() > 1 and allocator.wanted(), allocator.kept


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


def interleaved(runs, rounds: int):
    """Call each of `runs` once per round, in order on even rounds and in reverse on odd
    ones (A B, B A, ...): a neighbour's load drifting over time hits all alike. Returns
    one list of results per run."""
    out = [[] for _ in runs]
    for i in range(rounds):
        order = range(len(runs)) if i % 2 == 0 else reversed(range(len(runs)))
        for k in order:
            out[k].append(runs[k]())
    return out


def paired(run_a, run_b, pairs: int):
    """A B B A ...: `interleaved` for two runs; returns (results of A, results of B)."""
    return tuple(interleaved([run_a, run_b], pairs))


def ratio_stats(a, b) -> dict:
    """Pairwise ratios a[i] / b[i]: their median, min and max."""
    r = np.asarray(a, float) / np.asarray(b, float)
    return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()), "n": len(r)}


def ratio_text(stats: dict) -> str:
    return f"{stats['median']:.2f} (min {stats['min']:.2f}, max {stats['max']:.2f}, {stats['n']} pairs)"


def parse_bytes(text: str) -> int:
    """'64M', '4KiB', '1048576' -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    return int(float(t[:-1] if scale > 1 else t) * scale)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_state(buddyinfo: str | None = None) -> str:
    """Free memory, and how much of it lies in physically contiguous blocks of 2 MiB or
    more (/proc/buddyinfo, Linux; the Normal zone). This machine's slow state for large
    shared-memory transfers (2-5x, MPI_Allreduce's as ours) came with fragmented memory
    and ended with compaction (docs/timing.md). A hint for reading a run, not a verdict. ""
    where the kernel does not say. `buddyinfo`: that file's text (tests)."""
    try:
        lines = (buddyinfo if buddyinfo is not None else open("/proc/buddyinfo").read()).splitlines()
    except OSError:
        return ""
    page = os.sysconf("SC_PAGE_SIZE")
    zones = [f[4:] for f in (line.split() for line in lines) if len(f) > 4]
    zones = [f[4:] for f in (line.split() for line in lines) if len(f) > 4 and f[3] == "Normal"] or zones
    if not zones:
        return ""
    free = large = 0
    for counts in zones:  # counts[k]: free blocks of 2**k pages
        free += sum(int(c) << k for k, c in enumerate(counts)) * page
        large += sum(int(c) << k for k, c in enumerate(counts) if page << k >= 2 << 20) * page
    return f"free memory {free >> 20} MiB, {large >> 20} MiB of it in blocks of 2 MiB or more"


def compact_memory() -> bool:
    """Ask Linux to compact memory now (root only): on this machine it ended the slow state
    that `memory_state` hints at, each time it was tried (docs/timing.md). Whether it ran."""
    try:
        with open("/proc/sys/vm/compact_memory", "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def one_thread_env(threads: int = 1) -> dict:
    """Environment variables fixing BLAS/OpenMP threads for a worker process."""
    return {v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def to_torch(torch, model):
    """A torch.nn.Sequential mirroring the minidist Sequential `model`, same weights."""
    from minidist import nn

    tnn = torch.nn
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            layers.append(tnn.Linear(m.in_features, m.out_features))
        elif isinstance(m, nn.Conv2d):
            o, c, kh, kw = m.weight.shape
            layers.append(tnn.Conv2d(c, o, (kh, kw), stride=m.stride, padding=m.padding))
        elif isinstance(m, nn.BatchNorm2d):
            layers.append(tnn.BatchNorm2d(m.num_features))
        elif isinstance(m, nn.ReLU):
            layers.append(tnn.ReLU())
        elif isinstance(m, nn.MaxPool2d):
            layers.append(tnn.MaxPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.Flatten):
            layers.append(tnn.Flatten())
        else:
            raise TypeError(f"no torch counterpart written for {type(m).__name__}")
    net = tnn.Sequential(*layers)
    with torch.no_grad():
        for (_, src), (_, dst) in zip(model.named_parameters(), net.named_parameters()):
            dst.copy_(torch.from_numpy(src.data.copy()))
    return net


def start_gloo(comm):
    """torch.distributed on gloo over the ranks of the minidist Communicator `comm` (file://
    rendezvous; the module, with ``.torch`` set), or None when torch is absent (or
    MINIDIST_BENCH_NO_TORCH is set)."""
    if not torch_available():
        return None
    import tempfile

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    path = comm.mpi.bcast(tempfile.mktemp(prefix="gloo-init-") if comm.rank == 0 else None, root=0)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=comm.rank, world_size=comm.size)
    dist.torch = torch
    return dist


def mpiexec_command(n: int) -> list:
    """``mpiexec -n N`` (the venv's MPICH first), with Open MPI's flags for running as root
    and with more ranks than cores when it is Open MPI."""
    import shutil
    from pathlib import Path

    local = Path(sys.executable).parent / "mpiexec"
    exe = str(local) if local.exists() else (shutil.which("mpiexec") or "mpiexec")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    extra = ["--allow-run-as-root", "--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    return [exe, *extra, "-n", str(n)]
