"""The alpha-beta-gamma cost model, the hardware profiles, and calibration.

Hand-computed values use a toy profile (alpha=1 s, beta=0.01 s/B, gamma=0.001 s/B, no
node limit) so every term is visible in the number; the MPI part runs `calibrate` under
``mpiexec -n 2`` once per session, with its tiny `quick` sweep.
"""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings

from minidist.cost import costmodel as cm
from minidist.cost import counts
from minidist.cost.calibrate import (DEFAULT_SIZES, QUICK_SIZES, fit_alpha_beta,
                                     fit_eager_rendezvous)
from minidist.cost.profiles import PROFILES, Profile, load_profile, save_profile
from mpi_util import run_mpi
from strategies import cost_model_cases

TOY = Profile("toy", alpha=1.0, beta=0.01, gamma=0.001)
A, B, G = TOY.alpha, TOY.beta, TOY.gamma
n = 1000.0

# (collective, algorithm, N, expected seconds), each written out from the docstring formula
HAND = [
    ("ring_allreduce", None, 2, 2 * 1 * A + 2 * 1 / 2 * n * B + 1 / 2 * n * G),
    ("ring_allreduce", None, 5, 2 * 4 * A + 2 * 4 / 5 * n * B + 4 / 5 * n * G),
    ("ring_reduce_scatter", None, 5, 4 * A + 4 / 5 * n * B + 4 / 5 * n * G),
    ("ring_allgather", None, 5, 4 * A + 4 / 5 * n * B),
    ("recursive_doubling_allreduce", None, 2, 1 * (A + n * B + n * G)),
    ("recursive_doubling_allreduce", None, 8, 3 * (A + n * B + n * G)),
    # N=5: p'=4, fold-in + 2 rounds + send-back: (lg p' + 2) alpha, beta; (lg p' + 1) gamma
    ("recursive_doubling_allreduce", None, 5, 4 * A + 4 * n * B + 3 * n * G),
    ("rabenseifner_allreduce", None, 2, 2 * A + 2 * 1 / 2 * n * B + 1 / 2 * n * G),
    ("rabenseifner_allreduce", None, 8, 2 * 3 * A + 2 * 7 / 8 * n * B + 7 / 8 * n * G),
    ("rabenseifner_allreduce", None, 5,
     (2 * 2 + 2) * A + (2 * 3 / 4 + 2) * n * B + (3 / 4 + 1) * n * G),
    ("gather_to_root", None, 2, 1 * (A + n * B)),
    ("gather_to_root", None, 5, 4 * (A + n * B)),
    ("reduce_to_root", "linear", 5, 4 * (A + n * B + n * G)),
    ("reduce_to_root", "binomial", 5, 3 * (A + n * B + n * G)),
    ("reduce_to_root", "binomial", 2, 1 * (A + n * B + n * G)),
    ("broadcast", "linear", 5, 4 * (A + n * B)),
    ("broadcast", "binomial", 5, 3 * (A + n * B)),
    ("broadcast", "binomial", 8, 3 * (A + n * B)),
    ("broadcast", "binomial", 2, 1 * (A + n * B)),
    ("scatter", None, 5, 2 * 4 * A + (4 / 5 * n + 80 * 4) * B),
    ("scatter", None, 2, 2 * 1 * A + (1 / 2 * n + 80) * B),
]


@pytest.mark.parametrize("collective,algorithm,size,expected", HAND,
                         ids=[f"{c}-{a}-N{s}" for c, a, s, _ in HAND])
def test_formula_matches_hand_computed_value(collective, algorithm, size, expected):
    assert cm.predict(collective, size, n, TOY, algorithm) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("collective", sorted(set(cm.COLLECTIVE_STEPS) - {"allreduce"}))
def test_one_rank_communicates_nothing(collective):
    terms = cm.cost_terms(collective, 1, 1 << 20, "shm")
    assert terms["total_s"] == 0.0 and terms["rounds"] == 0 and terms["bytes"] == 0.0


def test_cost_terms_add_up_and_split_as_the_formula():
    t = cm.cost_terms("ring_allreduce", 5, n, TOY)
    assert t["rounds"] == 8
    assert t["alpha_s"] == pytest.approx(8 * A)
    assert t["beta_s"] == pytest.approx(8 / 5 * n * B)
    assert t["gamma_s"] == pytest.approx(4 / 5 * n * G)
    assert t["node_s"] == 0.0
    assert t["total_s"] == pytest.approx(t["alpha_s"] + t["beta_s"] + t["gamma_s"])


def test_mpi_allreduce_follows_mpich_selection():
    # MPICH's MPIR tuning table: recursive doubling when n <= 8 B or count < p', else
    # reduce-scatter + all-gather (Rabenseifner).
    assert cm.mpich_allreduce_algorithm(8, 8) == "recursive_doubling"
    assert cm.mpich_allreduce_algorithm(8, 16) == "recursive_doubling"   # 4 floats < p'=8
    assert cm.mpich_allreduce_algorithm(8, 32) == "rabenseifner"          # 8 floats = p'
    assert cm.mpich_allreduce_algorithm(5, 1 << 20) == "rabenseifner"
    assert cm.mpich_allreduce_algorithm(1, 1 << 20) == "none"
    # MPI's own all-reduce is predicted as MPICH's choice, written out from the formulas
    big = float(1 << 20)
    hand = {(8, 16): 3 * (A + 16 * B + 16 * G),                                    # recursive doubling
            (8, 1 << 20): 2 * 3 * A + 2 * 7 / 8 * big * B + 7 / 8 * big * G,     # Rabenseifner
            (5, 4096): (2 * 2 + 2) * A + (2 * 3 / 4 + 2) * 4096 * B + (3 / 4 + 1) * 4096 * G}
    for (size, nbytes), seconds in hand.items():
        assert cm.predict("mpi_allreduce", size, nbytes, TOY) == pytest.approx(seconds, rel=1e-12)


# ---- one source of counts: the model's critical path vs the ledger's closed forms ---------
# (collective in the model, collective in counts.py, algorithm, the rank on the critical
#  path, which of its counts is the critical path)
CRITICAL = [
    ("ring_allreduce", "ring_allreduce", None, 0, "bytes_sent"),
    ("ring_reduce_scatter", "ring_reduce_scatter", None, 0, "bytes_sent"),
    ("ring_allgather", "ring_allgather", None, 0, "bytes_sent"),
    ("gather_to_root", "gather_to_root", None, 0, "bytes_received"),
    ("reduce_to_root", "reduce_to_root", "linear", 0, "bytes_received"),
    ("reduce_to_root", "reduce_to_root", "binomial", 0, "bytes_received"),
    ("broadcast", "broadcast", "linear", 0, "bytes_sent"),
    ("broadcast", "broadcast", "binomial", 0, "bytes_sent"),
    ("scatter", "scatter", None, 0, "bytes_sent"),
    ("recursive_doubling_allreduce", "recursive_doubling_allreduce", None, -1, "bytes_sent"),
    ("rabenseifner_allreduce", "rabenseifner_allreduce", None, -1, "bytes_sent"),
]


@pytest.mark.parametrize("collective,counted,algorithm,rank,key", CRITICAL,
                         ids=[f"{c[0]}-{c[2]}" for c in CRITICAL])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 33, 64])
def test_model_counts_agree_with_the_ledgers_closed_forms(collective, counted, algorithm, rank,
                                                          key, size):
    itemsize, count = 4, 64 * 3 * 5 * 7 * 11  # divisible by every chunking used here
    nbytes = count * itemsize
    terms = cm.cost_terms(collective, size, nbytes, TOY, algorithm)
    assert terms["rounds"] == counts.rounds(collective, size, algorithm)
    pof2 = 1 << (size.bit_length() - 1)
    rank = rank % size if rank >= 0 else (1 if size > pof2 else size - 1)  # a fold-in rank if any
    ledger = counts.message_counts(counted, size, rank, count, itemsize, algorithm=algorithm)
    expected = ledger[key]
    if rank == 1 and size > pof2:  # it first receives the fold-in, then starts its own sends
        expected += nbytes
    assert terms["bytes"] == pytest.approx(expected, rel=1e-12)


# ---- the auto choice ------------------------------------------------------------------------
@pytest.mark.parametrize("profile", sorted(PROFILES) + ["calibrated-like"])
@pytest.mark.parametrize("size", [2, 3, 5, 8, 64, 1024])
def test_auto_picks_recursive_doubling_for_tiny_and_bandwidth_optimal_for_large(profile, size):
    from minidist.comm.auto import choose_allreduce_algorithm
    if profile == "calibrated-like":  # the kind of numbers calibrate() gives on a laptop
        profile = Profile("calibrated", alpha=3e-6, beta=1.5e-10, gamma=8e-11,
                          ranks_per_node=2, node_bw=2e10)
    try:
        cm.use_profile(profile)  # installs the profile's table in minidist.comm
        assert choose_allreduce_algorithm(8, size) == "recursive_doubling"
        assert choose_allreduce_algorithm(256 << 20, size) in ("ring", "rabenseifner")
        # and, on the table's grid, the choice is the model's fastest
        for nbytes in (8, 4096, 1 << 20, 256 << 20):
            chosen = choose_allreduce_algorithm(nbytes, size)
            best = min(cm.predict("allreduce", size, nbytes, profile, alg)
                       for alg in ("ring", "recursive_doubling", "rabenseifner"))
            assert cm.predict("allreduce", size, nbytes, profile, chosen) == best
    finally:
        cm.use_profile(None)


def test_comm_builtin_table_is_the_shm_models_choice():
    from minidist.comm.auto import SHM_TABLE
    assert cm.auto_table("shm", sizes=range(2, 17)) == SHM_TABLE


def test_auto_without_a_profile_uses_the_shm_table_and_follows_use_profile(monkeypatch, tmp_path):
    from minidist.comm.auto import choose_allreduce_algorithm
    monkeypatch.delenv("MINIDIST_PROFILE", raising=False)
    cm.use_profile(None)
    chosen = {}
    for size in (2, 3, 4, 8, 16):
        for nbytes in (8, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 1 << 20, 64 << 20):
            chosen[size, nbytes] = choose_allreduce_algorithm(nbytes, size)
            assert chosen[size, nbytes] == cm.best_allreduce(
                size, nbytes, "shm", candidates=("recursive_doubling", "ring", "rabenseifner"))
    assert chosen[2, 8] == "recursive_doubling" and chosen[2, 64 << 20] == "ring"
    assert len(set(chosen.values())) == 3  # by size (and N), not a fixed threshold
    # a latency-heavy fabric set by use_profile: the model keeps recursive doubling longer
    slow = Profile("slow-latency", alpha=1e-3, beta=1e-10, gamma=1e-11)
    try:
        cm.use_profile(slow)
        assert choose_allreduce_algorithm(1 << 20, 8) == "recursive_doubling" != chosen[8, 1 << 20]
        assert cm.predict("allreduce", 8, 1 << 20, slow) == \
            cm.predict("recursive_doubling_allreduce", 8, 1 << 20, slow)
    finally:
        cm.use_profile(None)
    assert choose_allreduce_algorithm(1 << 20, 8) == chosen[8, 1 << 20]  # back to shm
    # $MINIDIST_PROFILE names the default that entry points apply with use_profile
    path = tmp_path / "slow.json"
    save_profile(slow, path)
    monkeypatch.setenv("MINIDIST_PROFILE", str(path))
    assert cm.default_profile() == slow
    try:
        cm.use_profile(cm.default_profile())
        assert choose_allreduce_algorithm(1 << 20, 8) == "recursive_doubling"
    finally:
        cm.use_profile(None)
    monkeypatch.setenv("MINIDIST_PROFILE", "10gbe")  # a name works too
    assert cm.default_profile() is PROFILES["10gbe"]
    monkeypatch.setenv("MINIDIST_PROFILE", "no-such-profile")
    with pytest.raises(ValueError, match="neither a name in"):
        cm.default_profile()


# ---- the node-wide shared-bandwidth term --------------------------------------------------
def test_node_term_is_the_roofline_of_each_step():
    # The node carries 200 B/s in all; one rank's link 100 B/s: four busy ranks saturate it.
    node = TOY.with_(node_bw=200.0, ranks_per_node=16)
    # ring, N=4 on one node: 6 steps of n/4 bytes, 3 of them also reducing n/4.
    m = n / 4
    rs = max(m * B + m * G, 4 * (m + m) / 200.0)
    ag = max(m * B, 4 * m / 200.0)
    assert rs == 4 * (m + m) / 200.0 and ag == 4 * m / 200.0  # the node is the limit here
    assert cm.predict("ring_allreduce", 4, n, node) == pytest.approx(3 * (A + rs) + 3 * (A + ag))
    # one rank per node: the link alone limits, as without a node term
    assert cm.predict("ring_allreduce", 4, n, node, ranks_per_node=1) == \
        pytest.approx(cm.predict("ring_allreduce", 4, n, TOY))


def test_node_term_reproduces_the_16_rank_slowdown():
    # Measured on a 16-core machine: a Python ring all-reduce of 64 MiB took 24 ms with 2
    # ranks and 76 ms with 16, though each rank's bytes hardly change. Fit beta to the
    # 2-rank time (gamma nominal), take the "shm" profile's node_bw (40 GB/s): the model
    # then predicts the 16-rank time; without the node term it cannot.
    nbytes = 64 << 20
    shm = PROFILES["shm"]
    beta = (24e-3 - 2 * shm.alpha - nbytes / 2 * shm.gamma) / nbytes
    fitted = shm.with_(beta=beta)
    assert cm.predict("ring_allreduce", 2, nbytes, fitted) == pytest.approx(24e-3, rel=0.02)
    assert cm.predict("ring_allreduce", 16, nbytes, fitted) == pytest.approx(76e-3, rel=0.05)
    free = fitted.with_(node_bw=None)
    assert cm.predict("ring_allreduce", 16, nbytes, free) < 2 * 24e-3


# ---- monotonicity ---------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(cost_model_cases())
def test_time_grows_with_bytes(case):
    collective, algorithm, size, nbytes, profile = case
    if collective == "mpi_allreduce" and size > 1 and cm.mpich_allreduce_algorithm(
            size, nbytes, 4) != cm.mpich_allreduce_algorithm(size, 2 * nbytes + 1, 4):
        nbytes = 2 * nbytes + 1  # MPICH switches algorithm in between (and may get faster)
    smaller = cm.predict(collective, size, nbytes, profile, algorithm)
    larger = cm.predict(collective, size, 2 * nbytes + 1, profile, algorithm)
    assert larger >= smaller >= 0
    if size > 1:
        assert larger > smaller


GROWS_WITH_N = [("ring_allreduce", None), ("ring_reduce_scatter", None),
                ("ring_allgather", None), ("gather_to_root", None), ("reduce_to_root", "linear"),
                ("reduce_to_root", "binomial"), ("broadcast", "linear"), ("broadcast", "binomial"),
                ("scatter", None)]


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("collective,algorithm", GROWS_WITH_N)
def test_time_grows_with_ranks(collective, algorithm, profile):
    times = [cm.predict(collective, size, 1 << 20, profile, algorithm) for size in range(1, 70)]
    times += [cm.predict(collective, size, 1 << 20, profile, algorithm)
              for size in (256, 1000, 4096)]
    assert all(b >= a for a, b in zip(times, times[1:]))


@pytest.mark.parametrize("collective", ["recursive_doubling_allreduce", "rabenseifner_allreduce"])
def test_power_of_two_algorithms_grow_with_ranks_over_powers_of_two(collective):
    # Between powers of two they need not: N=5 pays a fold-in and a send-back that N=8 does not.
    times = [cm.predict(collective, 1 << k, 1 << 20, "ib-hdr") for k in range(13)]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert cm.predict(collective, 5, 1 << 20, "ib-hdr") > \
        cm.predict(collective, 8, 1 << 20, "ib-hdr")


def test_thousands_of_ranks_and_the_bandwidth_bound():
    # Ring and Rabenseifner approach 2 n beta (the Patarasuk-Yuan bound) as N grows;
    # recursive doubling pays lg N full vectors.
    nbytes = 100e6
    ib = PROFILES["ib-hdr"]
    bound = 2 * nbytes * ib.beta
    for algorithm in ("ring_allreduce", "rabenseifner_allreduce"):
        t = cm.cost_terms(algorithm, 4096, nbytes, ib)
        assert bound * (1 - 1 / 4096) == pytest.approx(t["beta_s"])
    rd = cm.cost_terms("recursive_doubling_allreduce", 4096, nbytes, ib)
    assert rd["beta_s"] == pytest.approx(12 * nbytes * ib.beta)


def test_prediction_table_and_markdown():
    rows = cm.prediction_table(4 * 25_000_000, sizes=(2, 64, 4096), profile="nvlink")
    assert [r["ranks"] for r in rows] == [2, 64, 4096]
    for r in rows:
        assert r["ring_allreduce"] == cm.predict("ring_allreduce", r["ranks"], 1e8, "nvlink")
    text = cm.format_table(rows, unit="ms")
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows) and lines[0].startswith("| ranks |")
    assert f"{rows[-1]['ring_allreduce'] * 1e3:.4g}" in lines[-1]


def test_bad_arguments_say_what_was_wrong():
    with pytest.raises(ValueError, match="unknown collective 'allgatherz'"):
        cm.predict("allgatherz", 4, 10, "shm")
    with pytest.raises(ValueError, match=r"size must be an int >= 1 ranks \(got 0\)"):
        cm.predict("ring_allreduce", 0, 10, "shm")
    with pytest.raises(ValueError, match="nbytes must be a finite number >= 0"):
        cm.predict("ring_allreduce", 4, -1, "shm")
    with pytest.raises(ValueError, match="broadcast algorithm must be 'linear' or 'binomial'"):
        cm.predict("broadcast", 4, 10, "shm", algorithm="tree")
    with pytest.raises(ValueError, match="unknown profile 'infiniband'"):
        cm.predict("ring_allreduce", 4, 10, "infiniband")
    with pytest.raises(ValueError, match="has no algorithm choice"):
        cm.predict("ring_allreduce", 4, 10, "shm", algorithm="binomial")


# ---- profiles -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_named_profiles_are_valid_and_sourced(name):
    p = PROFILES[name]
    assert p.name == name
    assert 1e-8 < p.alpha < 1e-3 and 0 < p.beta < 1e-8 and 0 < p.gamma < 1e-8
    assert p.ranks_per_node >= 1 and (p.node_bw is None or p.node_bw > 0)
    assert len(p.source) > 40


def test_named_profiles_rank_as_the_hardware_does():
    bw = {name: p.bandwidth for name, p in PROFILES.items()}
    assert bw["nvlink"] > bw["ib-hdr"] > bw["100gbe"] > bw["10gbe"]
    assert PROFILES["10gbe"].alpha > PROFILES["ib-hdr"].alpha


def test_profile_rejects_nonsense():
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        Profile("bad", alpha=-1e-6, beta=1e-9, gamma=1e-10)
    with pytest.raises(ValueError, match="beta must be a finite number"):
        Profile("bad", alpha=1e-6, beta=math.nan, gamma=1e-10)
    with pytest.raises(ValueError, match="ranks_per_node must be an int >= 1"):
        Profile("bad", alpha=1e-6, beta=1e-9, gamma=1e-10, ranks_per_node=0)
    with pytest.raises(ValueError, match="node_bw must be > 0"):
        Profile("bad", alpha=1e-6, beta=1e-9, gamma=1e-10, node_bw=0.0)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_save_load_round_trip(tmp_path, name):
    path = tmp_path / f"{name}.json"
    save_profile(PROFILES[name], path)
    data = json.loads(path.read_text())  # plain JSON, readable by anything
    assert data["name"] == name and data["beta"] == PROFILES[name].beta
    assert load_profile(path) == PROFILES[name]


def test_load_rejects_unknown_fields(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**PROFILES["shm"].to_dict(), "latency": 1.0}))
    with pytest.raises(ValueError, match=r"unknown profile fields \['latency'\]"):
        load_profile(path)


# ---- calibration ----------------------------------------------------------------------------
def test_fit_recovers_a_known_line():
    sizes = [8, 1024, 65536, 1 << 20]
    alpha, beta = fit_alpha_beta(sizes, [3e-6 + 2e-10 * m for m in sizes])
    assert alpha == pytest.approx(3e-6, rel=1e-6) and beta == pytest.approx(2e-10, rel=1e-6)


def test_fit_stays_positive_on_noise():
    alpha, beta = fit_alpha_beta([8, 16, 32], [5e-6, 4e-6, 4.5e-6])
    assert alpha > 0 and beta > 0


@pytest.mark.parametrize("seed", range(20))
def test_fit_is_robust_to_noise_and_outliers(seed):
    # Multiplicative noise of +-30% and one 10x outlier (a neighbour's burst) at a random size:
    # medians keep both parameters near the truth; least squares weighted by 1/t let the
    # slope fall to ~0 (the flake seen under load).
    import numpy as np
    rng = np.random.default_rng(seed)
    sizes = np.array(DEFAULT_SIZES, dtype=np.float64)
    times = (3e-6 + 2e-10 * sizes) * rng.uniform(0.7, 1.3, sizes.size)
    times[rng.integers(sizes.size)] *= 10
    alpha, beta = fit_alpha_beta(sizes, times)
    assert 3e-6 / 2 < alpha < 3e-6 * 2 and 2e-10 / 2 < beta < 2e-10 * 2, (alpha, beta)
    # flat times (noise swamps the slope): beta stays at least half the time per byte seen
    flat = rng.uniform(0.9, 1.1, sizes.size) * 1e-3
    _, beta = fit_alpha_beta(sizes, flat)
    big = sizes >= 64 << 10
    assert beta >= 0.5 * np.median(flat[big] / sizes[big]) > 1e-13


def test_fit_rejects_non_positive_or_mismatched_data():
    with pytest.raises(ValueError, match="at least two"):
        fit_alpha_beta([8, 16], [1e-6])
    with pytest.raises(ValueError, match="finite and > 0"):
        fit_alpha_beta([8, 16], [1e-6, 0.0])


@pytest.mark.parametrize("sizes", [DEFAULT_SIZES, QUICK_SIZES])
def test_eager_rendezvous_fit_recovers_both_regimes(sizes):
    import numpy as np
    m = np.array(sizes, dtype=np.float64)
    stepped = np.where(m > 4096, 7e-6, 3e-6) + 1e-10 * m
    alpha, beta, rendezvous = fit_eager_rendezvous(m, stepped)
    assert alpha == pytest.approx(3e-6, rel=0.02) and beta == pytest.approx(1e-10, rel=1e-3)
    assert rendezvous == pytest.approx(7e-6, rel=1e-3)
    alpha, beta, rendezvous = fit_eager_rendezvous(m, 3e-6 + 1e-10 * m)  # no step: one alpha
    assert rendezvous is None and alpha == pytest.approx(3e-6, rel=1e-6)


def test_rendezvous_alpha_applies_above_eager_max_only():
    base = Profile("two-regime", alpha=2e-6, beta=1e-10, gamma=5e-11, ranks_per_node=2,
                   node_bw=None, eager_max=4096, rendezvous_alpha=6e-6)
    assert base.alpha_for(4096) == 2e-6 and base.alpha_for(4097) == 6e-6
    # ring all-reduce on 2 ranks: 2 messages of n/2 bytes
    small = cm.cost_terms("ring_allreduce", 2, 8192, base)
    large = cm.cost_terms("ring_allreduce", 2, 1 << 20, base)
    assert small["alpha_s"] == pytest.approx(2 * 2e-6)
    assert large["alpha_s"] == pytest.approx(2 * 6e-6)
    plain = base.with_(eager_max=None, rendezvous_alpha=None)
    assert cm.cost_terms("ring_allreduce", 2, 1 << 20, plain)["alpha_s"] == pytest.approx(2 * 2e-6)
    for name in PROFILES:  # the named profiles keep one alpha
        terms = cm.cost_terms("ring_allreduce", 8, 64 << 20, name)
        assert terms["alpha_s"] == pytest.approx(terms["rounds"] * PROFILES[name].alpha)
    with pytest.raises(ValueError, match="go together"):
        Profile("half", alpha=1e-6, beta=1e-10, gamma=0.0, eager_max=4096)
    with pytest.raises(ValueError, match="eager_max must be an int"):
        Profile("bad", alpha=1e-6, beta=1e-10, gamma=0.0, eager_max=-1, rendezvous_alpha=1e-6)


def test_two_regime_profile_round_trips_through_json(tmp_path):
    two = Profile("calibrated", alpha=2e-6, beta=1e-10, gamma=5e-11, eager_max=4096,
                  rendezvous_alpha=6e-6)
    save_profile(two, tmp_path / "two.json")
    assert load_profile(tmp_path / "two.json") == two


def test_current_profile_and_the_cached_environment_file(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIDIST_PROFILE", raising=False)
    cm.use_profile(None)
    assert cm.current_profile() is None and cm.default_profile() is None
    try:
        assert cm.use_profile("10gbe") is cm.current_profile() is PROFILES["10gbe"]
    finally:
        cm.use_profile(None)
    assert cm.current_profile() is None
    path = tmp_path / "env.json"
    save_profile(PROFILES["pcie"].with_(name="from-env"), path)
    reads = []
    real = cm.load_profile
    monkeypatch.setattr(cm, "load_profile", lambda p: reads.append(p) or real(p))
    monkeypatch.setenv("MINIDIST_PROFILE", str(path))
    first = cm.default_profile()
    assert first.name == "from-env" and cm.default_profile() is first
    assert len(reads) == 1  # read once, then served from the cache
    assert cm.current_profile() is None  # the environment is not use_profile's setting


@pytest.fixture(scope="module")
def calibrated():
    return run_mpi(2, "calibrate_quick.py", timeout=60)


@pytest.mark.mpi
def test_calibrate_two_ranks_gives_positive_finite_parameters(calibrated):
    first = calibrated[0]["profile"]
    for key in ("alpha", "beta", "gamma", "node_bw"):
        assert math.isfinite(first[key]) and first[key] > 0, (key, first[key])
    assert 1e-8 < first["alpha"] < 1e-2 and 1e-13 < first["beta"] < 1e-6
    assert first["ranks_per_node"] == 2 and first["name"] == "calibrated"
    assert (first["eager_max"] is None) == (first["rendezvous_alpha"] is None)
    if first["rendezvous_alpha"] is not None:  # a step up past the eager limit, if any
        assert first["rendezvous_alpha"] > first["alpha"]
    assert calibrated[1]["profile"] == first  # every rank returns the same profile


@pytest.mark.mpi
def test_calibrate_leaves_the_callers_ledger_alone(calibrated):
    assert all(r["ledger_messages"] == 0 for r in calibrated)


@pytest.mark.mpi
def test_calibrate_alone_needs_a_base_profile(calibrated):
    solo = calibrated[0]["solo"]
    assert "at least 2 ranks" in solo["error"] and "mpiexec -n 2" in solo["error"]
    assert solo["with_base"]["alpha"] == PROFILES["ib-hdr"].alpha
    assert solo["with_base"]["gamma"] > 0 and solo["with_base"]["gamma"] != PROFILES["ib-hdr"].gamma


# ---- the benchmark script -------------------------------------------------------------------
@pytest.mark.mpi
def test_benchmark_script_runs_and_writes_its_tables(tmp_path):
    import csv

    from mpi_util import ROOT, check, launch

    out_csv, out_json = tmp_path / "bench.csv", tmp_path / "bench.json"
    proc = check(launch(2, ROOT / "scripts" / "bench_collectives.py", "--max-bytes", 32, "--seconds", 0.001,
                        "--min-iters", 2, "--max-iters", 3, "--warmup", 1, "--passes", 1,
                        "--quick-calibration", "--tune-malloc", "--csv", out_csv, "--json", out_json,
                        timeout=90, mpi4py=False))
    assert "ring/mpi <= 1.0 at >= 4 MiB" in proc.stdout  # the targets summary is printed
    report = json.loads(out_json.read_text())
    assert report["meta"]["ranks"] == 2 and report["profile"]["name"] == "calibrated"
    assert report["meta"]["malloc"] == "glibc malloc tuned (mallopt)"  # and the header says so
    assert "times in us; glibc malloc tuned (mallopt)" in proc.stdout
    assert report["profile_after"]["name"] == "calibrated"  # recalibrated after the sweep
    assert "drift between the calibrations" in proc.stdout
    rows = report["rows"]
    assert [r["bytes"] for r in rows] == [8, 16, 32]
    for r in rows:
        for method in ("ring", "rd", "rab", "auto", "mpi", "g+b", "floor", "instrumented"):
            avg, lo, hi = r[method]
            assert 0 < lo <= avg <= hi, (method, r[method])
        assert r["ring/mpi"] == pytest.approx(r["ring"][0] / r["mpi"][0])
        assert r["busbw_ring"] == pytest.approx(r["algbw_ring"] * 2 * (2 - 1) / 2)
        assert r["auto_algorithm"] == "recursive_doubling"
        assert r["predicted"]["ring"] == pytest.approx(
            cm.predict("ring_allreduce", 2, r["bytes"], Profile(**report["profile"])))
        mean = {k: (report["profile"][k] + report["profile_after"][k]) / 2
                for k in ("alpha", "beta", "gamma", "node_bw")}
        assert r["ring/model (mean)"] == pytest.approx(
            r["ring"][0] / cm.predict("ring_allreduce", 2, r["bytes"], Profile("m", **mean,
                                      ranks_per_node=2)))
    with open(out_csv) as f:
        table = list(csv.DictReader(f))
    assert [int(t["bytes"]) for t in table] == [8, 16, 32] and "ledger" in table[0]


def test_benchmarks_share_one_malloc_tuning_and_leave_it_off_by_default():
    """bench_collectives and bench_engine import the same tune_malloc (scripts/benchutil.py);
    bench_collectives's default stays untuned and its header says which one ran."""
    import subprocess
    import sys

    from mpi_util import ROOT

    scripts = ROOT / "scripts"
    code = ("import sys; sys.argv = ['bench_collectives.py']; "
            "import benchutil, bench_collectives as bc; "
            "print(bc.parse_args([]).tune_malloc, bc.parse_args(['--tune-malloc']).tune_malloc, "
            "bc.tune_malloc is benchutil.tune_malloc, benchutil.malloc_note(False, False), "
            "'|', benchutil.tune_malloc())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=scripts, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    flags, tuned = proc.stdout.strip().split(" | ")
    assert flags == "False True True default glibc malloc"
    assert tuned == "True"  # glibc here: mallopt took effect
    engine = (scripts / "bench_engine.py").read_text()
    assert "from benchutil import" in engine and "def tune_malloc" not in engine
