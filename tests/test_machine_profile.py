"""The quick machine calibration (minidist.comm.machine): robust on synthetic timings,
cached per host and rank count."""
import json

import numpy as np
import pytest

from minidist.cost.machine import SIZES, cache_path, fit_passes, robust_median
from mpi_util import run_mpi

ALPHA, BETA = 5e-6, 2e-10


def _line(rng, noise=0.02, passes=7):
    m = np.asarray(SIZES, float)
    return (ALPHA + BETA * m) * (1 + noise * rng.standard_normal((passes, m.size)))


def test_robust_median_drops_outliers_and_reports_the_spread():
    rng = np.random.default_rng(0)
    clean = 1e-3 * (1 + 0.01 * rng.standard_normal(40))
    spiked = np.concatenate([clean, [0.5, 0.9, 2.0]])  # three bursts of someone else's load
    centre, spread, dropped = robust_median(spiked)
    assert dropped == 3
    assert centre == pytest.approx(np.median(clean), rel=1e-2)
    assert 0 < spread < 0.05
    assert robust_median([2.0, 2.0, 2.0]) == (2.0, 0.0, 0)


def test_fit_recovers_alpha_and_beta_through_outliers_on_synthetic_timings():
    rng = np.random.default_rng(1)
    times = _line(rng)
    times[2, :] *= 30  # one whole pass spoiled by a neighbour's job
    times[0, 1] = 1.0  # and one wild sample
    fit = fit_passes(SIZES, times)
    assert fit["alpha"] == pytest.approx(ALPHA, rel=0.1)
    assert fit["beta"] == pytest.approx(BETA, rel=0.1)
    assert fit["outliers"] >= len(SIZES)
    assert not fit["noisy"]


def test_a_machine_too_noisy_to_trust_says_so():
    rng = np.random.default_rng(2)
    times = _line(rng, noise=0.0) * rng.lognormal(0.0, 1.2, size=(7, len(SIZES)))
    fit = fit_passes(SIZES, times)
    assert fit["noisy"] and max(fit["alpha_spread"], fit["beta_spread"]) > 0.5


def test_fit_needs_several_passes():
    with pytest.raises(ValueError, match="passes"):
        fit_passes(SIZES, [list(SIZES)])


@pytest.mark.mpi
def test_calibration_is_fast_cached_and_reused(tmp_path):
    first = run_mpi(2, "machine_profile.py", str(tmp_path), timeout=120)
    again = run_mpi(2, "machine_profile.py", str(tmp_path), timeout=120)
    assert all(not r["cached"] for r in first)
    assert first[0]["profile"] == first[1]["profile"] and again[0]["profile"] == again[1]["profile"]
    if not first[0]["noisy"]:  # a trusted profile is reused; a noisy one is measured again
        assert all(r["cached"] for r in again) and again[0]["profile"] == first[0]["profile"]
    assert first[0]["seconds"] < 6.0  # ~0.3 s quiet; passes stop after a 2 s budget under load
    saved = json.loads(cache_path(2, tmp_path).read_text())
    assert saved["profile"] in (first[0]["profile"], again[0]["profile"]) and saved["ranks"] == 2
    assert saved["cores"] >= 1 and saved["call_overhead"] >= 0 and saved["step_latency_all"] > 0
    assert set(saved["spread"]) == {"alpha", "beta", "call", "gamma"}
    assert isinstance(saved["noisy"], bool) and saved["verdict"]


def test_the_per_call_overhead_is_charged_once_per_collective_call():
    from minidist.cost.costmodel import cost_terms
    from minidist.cost.profiles import PROFILES
    from minidist.cost.stepcost import dense, predict_step

    base = PROFILES["shm"]
    slow = base.with_(call_overhead=1e-3)
    for collective in ("ring_allreduce", "broadcast", "gather_to_root"):
        plain, charged = cost_terms(collective, 4, 4096, base), cost_terms(collective, 4, 4096, slow)
        assert charged["call_s"] == 1e-3 and charged["total_s"] == pytest.approx(plain["total_s"] + 1e-3)
        assert cost_terms(collective, 1, 4096, slow)["total_s"] == 0.0  # one rank: no call at all
    shape = dense(1_000_000, n_tensors=4)
    for strategy in ("dp", "hub", "ddp"):
        plain = predict_step(strategy, 4, shape, profile=base)
        calls = sum(1 for _ in plain["phases"])  # at least one call per phase
        extra = predict_step(strategy, 4, shape, profile=slow)["seconds"] - plain["seconds"]
        assert extra >= calls * 1e-3 - 1e-12 and extra == pytest.approx(round(extra / 1e-3) * 1e-3)
