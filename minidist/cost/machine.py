"""This machine's cost profile for compare: alpha, beta, gamma and the per-call overhead of
a Python collective, measured in about two seconds, robust to noise, cached per host and
rank count.

Ranks 0 and 1 exchange messages (Sendrecv through a Communicator, as a ring step does,
on buffers as a step leaves them: `measure.StepBuffers`) while the other ranks sleep, so
the pair has a core each; the sweep is repeated in several passes, each size's samples
are cleaned of outliers (beyond 5 scaled MADs of the median) and reduced to their
median, and alpha/beta come from `calibrate.fit_alpha_beta`; gamma is np.add's time per
byte on such buffers.
Fitting each pass alone gives the spread of alpha and beta; above `NOISY_SPREAD` the
result is marked too noisy to trust. The cache file is written atomically; a cached
profile is reused unless `refresh`. Details: docs/cost-model.md, docs/timing.md.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from time import perf_counter

import numpy as np

from ..atomic import write_text
from ..comm import Communicator, ring_allreduce
from ..comm.tags import TAG_MACHINE_PROFILE
from .calibrate import fit_alpha_beta
from .measure import add_seconds, exchange
from .costmodel import predict
from .profiles import Profile

SIZES = (8, 64, 512, 4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20)
GAMMA_SIZES = (1 << 20, 2 << 20, 4 << 20)  # a step's reductions: megabytes, out of the caches
PASSES, REPEATS = 7, 9
MIN_PASSES, BUDGET_S = 3, 2.0  # passes stop once the exchanges have taken BUDGET_S (loaded machine)
NOISY_SPREAD = 0.5   # relative spread (IQR / median over passes) above which we distrust it
MAD_CUT = 5.0
VERSION = 5  # cache entries of another version are measured afresh


def robust_median(samples, cut: float = MAD_CUT) -> tuple[float, float, int]:
    """(median of the samples kept, their relative spread IQR/median, outliers dropped).
    A sample is an outlier when it lies more than `cut` scaled MADs (1.4826 * MAD, the
    standard deviation of normal noise) from the median; with MAD = 0 none is dropped."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"robust_median needs finite samples (got {x.tolist()})")
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    kept = x if mad == 0 else x[np.abs(x - med) <= cut * mad]
    centre = float(np.median(kept))
    q1, q3 = np.percentile(kept, [25, 75])
    return centre, float((q3 - q1) / centre) if centre > 0 else 0.0, int(x.size - kept.size)


def fit_passes(sizes, times_per_pass) -> dict:
    """Robust alpha/beta from ``times_per_pass[p][i]`` (pass p, size i, seconds): per size
    the robust median over passes, then `fit_alpha_beta`; each pass fitted alone gives the
    spread. Returns ``{alpha, beta, alpha_spread, beta_spread, outliers, noisy}``."""
    t = np.asarray(times_per_pass, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != len(sizes) or t.shape[0] < 2:
        raise ValueError(f"need >= 2 passes of {len(sizes)} times each (got shape {t.shape})")
    medians = [robust_median(t[:, i]) for i in range(t.shape[1])]
    alpha, beta = fit_alpha_beta(sizes, [m[0] for m in medians])
    per_pass = np.array([fit_alpha_beta(sizes, row) for row in t])
    spread = [robust_median(per_pass[:, k])[1] for k in (0, 1)]
    outliers = sum(m[2] for m in medians)
    return {"alpha": alpha, "beta": beta, "alpha_spread": spread[0], "beta_spread": spread[1],
            "outliers": outliers, "noisy": bool(max(spread) > NOISY_SPREAD)}


def job_cores(mpi_comm) -> int:
    """Cores this job may run on: per host, the union of its ranks' CPU affinity (or
    os.cpu_count() where affinity is unknown), summed over hosts (bookkeeping allgather)."""
    try:
        mine = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        mine = list(range(os.cpu_count() or 1))
    per_host: dict = {}
    for host, cores in mpi_comm.allgather((platform.node(), mine)):
        per_host.setdefault(host, set()).update(cores)
    return sum(len(cores) for cores in per_host.values())


def _sleep_until_all_arrive(mpi_comm) -> None:
    """A barrier that sleeps instead of spinning, so idle ranks leave the cores to the pair."""
    request = mpi_comm.Ibarrier()
    while not request.Test():
        time.sleep(2e-4)


def _exchange_sweep(pair: Communicator) -> list[float]:
    """One pass: per size, the median of REPEATS Sendrecv exchanges (the slower rank's)."""
    return [exchange(pair, nbytes, REPEATS, warmup=1, tag=TAG_MACHINE_PROFILE)
            for nbytes in SIZES]


def _ring_call_times(c: Communicator, calls: int) -> list[list[float]]:
    """Every rank's seconds of `calls` whole 8-byte ring_allreduce calls on `c` (checks,
    scratch, ledger and messages), each after a barrier, after one untimed call."""
    x = np.ones(1)
    times = []
    for _ in range(calls + 1):
        c.mpi.Barrier()
        t0 = perf_counter()
        ring_allreduce(c, x)
        times.append(perf_counter() - t0)
    return c.mpi.allgather(times[1:])


def _call_times(pair: Communicator) -> list[float]:
    """Seconds of a whole 8-byte ring_allreduce on the pair, the slower rank's per call: the
    per-call overhead is what the two messages' alpha does not explain."""
    return [max(a, b) for a, b in zip(*_ring_call_times(pair, 4 * REPEATS))]


def _gamma() -> tuple[float, float]:
    """(seconds per byte of np.add(a, b, out=a) on float32 as in a step, relative spread
    over sizes)."""
    per_byte = [robust_median(add_seconds(nbytes, REPEATS))[0] / nbytes
                for nbytes in GAMMA_SIZES]
    return robust_median(per_byte)[:2]


def _fit_on_rank0(passes, calls) -> dict:
    fit = fit_passes(SIZES, passes)
    gamma, gamma_spread = _gamma()
    profile = Profile("calibrated", alpha=fit["alpha"], beta=fit["beta"], gamma=gamma)
    call, call_spread, call_outliers = robust_median(calls)
    overhead = max(call - predict("ring_allreduce", 2, 8, profile, itemsize=8), 0.0)
    spread = {"alpha": fit["alpha_spread"], "beta": fit["beta_spread"], "call": call_spread,
              "gamma": gamma_spread}
    noisy = fit["noisy"] or max(call_spread, gamma_spread) > NOISY_SPREAD
    return {"alpha": fit["alpha"], "beta": fit["beta"], "gamma": gamma, "call_overhead": overhead,
            "spread": spread, "outliers": fit["outliers"] + call_outliers, "noisy": noisy,
            "verdict": ("too noisy to trust: the machine was busy (relative spread above "
                        f"{NOISY_SPREAD:.0%}); recalibrate when it is quiet") if noisy else
                       f"consistent (relative spread at most {max(spread.values()):.0%})"}


def measure(comm) -> dict:
    """Collective: measure alpha, beta (ranks 0 and 1, the others asleep), gamma and the
    per-call overhead (rank 0); every rank returns the same dict."""
    mpi = getattr(comm, "mpi", comm)
    rank, size = mpi.Get_rank(), mpi.Get_size()
    if size < 2:
        raise ValueError("measuring alpha and beta needs at least 2 ranks (got 1): run under "
                         "`mpiexec -n 2` or pick a named profile with --profile")
    start = perf_counter()
    sub = mpi.Split(0 if rank < 2 else 1, rank)
    result = None
    if rank < 2:
        pair = Communicator(sub)  # a private ledger: nobody's accounting is touched
        passes = []
        while len(passes) < PASSES and (len(passes) < MIN_PASSES or not _over_budget(pair, start)):
            passes.append(_exchange_sweep(pair))
        calls = _call_times(pair)
        if rank == 0:
            result = _fit_on_rank0(passes, calls)
    _sleep_until_all_arrive(mpi)
    sub.Free()
    result = mpi.bcast(result, root=0)
    return dict(result, step_latency_all=_step_latency_all(mpi), seconds=perf_counter() - start)


def _step_latency_all(mpi) -> float:
    """Seconds per ring step of an 8-byte ring_allreduce with every rank of the job taking
    part at once (where ranks outnumber cores, a step waits for its neighbour to get a
    core): the slowest rank's median over the calls, divided by the 2(N-1) steps."""
    everyone = Communicator(mpi)  # a private ledger
    slowest = max(robust_median(t)[0] for t in _ring_call_times(everyone, 2 * REPEATS))
    return slowest / (2 * (mpi.Get_size() - 1))


def _over_budget(pair: Communicator, start: float) -> bool:
    """Rank 0's verdict, the same on both ranks of the pair."""
    return bool(pair.mpi.bcast(perf_counter() - start > BUDGET_S if pair.rank == 0 else None, root=0))


def cache_path(size: int, cache_dir=None, host: str | None = None) -> Path:
    """``$MINIDIST_CACHE`` (else ``$XDG_CACHE_HOME/minidist``, else ``~/.cache/minidist``)
    ``/profile-HOST-nN.json``."""
    base = cache_dir or os.environ.get("MINIDIST_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minidist"
    return Path(base) / f"profile-{host or platform.node()}-n{int(size)}.json"


def _load_cached(path: Path, size: int) -> dict | None:
    try:
        data = json.loads(path.read_text())
        Profile.from_dict(data["profile"])  # validates
        return data if data["ranks"] == size and data.get("version") == VERSION else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: measure afresh


def machine_profile(comm, cache_dir=None, refresh: bool = False) -> dict:
    """This machine's calibration for the job's rank count (collective): read from the
    cache when present (unless `refresh`), else measured (`measure`) and cached by rank 0.
    A cached result marked noisy is measured again and replaced unless the new one is
    noisier still.

    Returns ``{"profile": Profile fields, "call_overhead", "step_latency_all" (seconds per
    ring step with every rank running: `_step_latency_all`), "spread", "outliers", "noisy",
    "verdict", "host", "ranks", "cores", "seconds", "created", "cached", "path"}``."""
    mpi = getattr(comm, "mpi", comm)
    size = mpi.Get_size()
    path = cache_path(size, cache_dir)
    cached = _load_cached(path, size) if mpi.Get_rank() == 0 and not refresh else None
    cached = mpi.bcast(cached, root=0)
    if cached is not None and not cached["noisy"]:
        return dict(cached, cached=True, path=str(path))
    found = measure(mpi)
    cores = job_cores(mpi)
    fields = {k: found[k] for k in ("alpha", "beta", "gamma", "call_overhead")}
    data = {"profile": Profile("calibrated", **fields, ranks_per_node=size,
                               source=f"machine_profile() on {platform.node()}: {size} ranks on "
                                      f"{cores} cores, {PASSES} passes, robust medians").to_dict(),
            **{k: found[k] for k in ("call_overhead", "step_latency_all", "spread", "outliers", "noisy",
                                     "verdict", "seconds")},
            "host": platform.node(), "ranks": size, "cores": cores, "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if cached is not None and max(cached["spread"].values()) < max(data["spread"].values()):
        return dict(cached, cached=True, path=str(path))  # a noisy cache, but less noisy than now
    if mpi.Get_rank() == 0:
        write_text(path, json.dumps(data, indent=1))  # atomically
    return dict(data, cached=False, path=str(path))


def profile_of(calibration: dict) -> Profile:
    """The `Profile` inside a `machine_profile` result."""
    return Profile.from_dict(calibration["profile"])
