"""The exercises' grader: correct solutions pass, subtly wrong ones fail NAMING the quantity
they get wrong, scaffolds report "not implemented" per function, the ring is graded under
mpiexec (N = 1..5, one launch per N for every ring solution) with Allreduce refused, byte
counts enforced and a deadlock reported as a hang."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from minidist.cli import main as minidist_main
from minidist.exercises.cli import main
from minidist.exercises.grading import load_solution
from minidist.exercises.norms import grade_batchnorm, grade_layernorm

from exercise_solutions.mutants import write_mutant

SOLUTIONS = Path(__file__).resolve().parent / "exercise_solutions"
GRADERS = {"batchnorm": grade_batchnorm, "layernorm": grade_layernorm}

# (mutant, exercise, cases that must fail (substring of the case name), the quantity each
# of them must name, cases that must still pass)
WRONG = [
    ("bn_biased_running_var", "batchnorm", "train", "running_var after step 1", "eval"),
    ("bn_momentum_swapped", "batchnorm", "train", "running_mean after step 1", "eval"),
    ("bn_conv_wrong_axes", "batchnorm", "train conv", "out at step 1", "train FC"),
    ("bn_backward_ignores_mean", "batchnorm", "train", "dx at step 1", "eval"),
    ("ln_wrong_axis", "layernorm", "seed", "out at", None),
    ("ln_eps_outside_sqrt", "layernorm", "eps 0.1", "out at", None),
    ("ln_backward_ignores_mean", "layernorm", "seed", "dx at", None),
    ("ln_dgamma_one_axis", "layernorm", "(3, 2, 5)", "dgamma has shape (2, 5), expected (5,)", "(4, 6)"),
]


def test_correct_norm_solutions_pass_and_check_exits_0(capsys):
    assert main(["check", str(SOLUTIONS / "correct"), "batchnorm", "layernorm"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "total: 26 of 26 cases pass (batchnorm 18/18, layernorm 8/8)" in out
    assert "train conv (4, 3, 5, 6) seed 0" in out and "eval FC" in out and "finite differences" in out


@pytest.mark.parametrize("mutant, exercise, failing, quantity, passing", WRONG, ids=[w[0] for w in WRONG])
def test_wrong_norm_solution_fails_naming_the_quantity(tmp_path, mutant, exercise, failing, quantity,
                                                       passing):
    results = GRADERS[exercise](write_mutant(mutant, tmp_path)).results
    chosen = [r for r in results if failing in r.case]
    assert chosen, f"no case matches {failing!r}"
    for r in chosen:
        assert not r.passed and r.problem.startswith(quantity), r.line()
        assert "expected" in r.problem
    if passing is not None:
        kept = [r for r in results if passing in r.case]
        assert kept and all(r.passed for r in kept), [r.line() for r in kept if not r.passed]


def test_learner_exception_and_missing_in_place_update_are_named(tmp_path, capsys):
    correct = (SOLUTIONS / "correct" / "batchnorm.py").read_text()
    (tmp_path / "batchnorm.py").write_text(
        correct.replace("running_mean[...] = (1 - momentum)", "running_mean = (1 - momentum)")
        .replace("    dbeta = dout.sum(axis=axes)", "    dbeta = {}['oops']"))
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "running_mean after step 1 at [0]" in out and "update the array in place" in out
    assert "Traceback" not in out
    fixed = correct.replace("    dbeta = dout.sum(axis=axes)", "    dbeta = {}['oops']")
    (tmp_path / "batchnorm.py").write_text(fixed)
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "batchnorm_backward raised KeyError: 'oops'" in out and "Traceback" not in out
    assert "  pass  eval FC (6, 3)" in out  # eval needs only the forward


def test_odd_return_values_are_reported_not_crashed_on(tmp_path, capsys):
    (tmp_path / "layernorm.py").write_text(
        "def layernorm_forward(x, gamma, beta, *, eps=1e-5):\n    return 'hello', None\n"
        "def layernorm_backward(dout, cache):\n    return 1, 2, 3\n")
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  (4, 6) seed 0 (eps 1e-05): out is not an array of numbers" in out
    assert "could not grade the values returned (ValueError" in out and "total: 0 of 8" in out


def test_scaffolds_import_and_check_reports_not_implemented_per_function(tmp_path, capsys):
    for name in ("batchnorm", "layernorm", "ring"):
        assert main(["start", name, str(tmp_path)]) == 0
        module = load_solution(tmp_path / f"{name}.py", f"scaffold_{name}")
        assert module.__doc__ and "NotImplementedError" not in module.__doc__
    assert main(["start", "ring", str(tmp_path)]) == 2  # never overwrites a learner's work
    capsys.readouterr()
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert ("not implemented: batchnorm_forward, batchnorm_backward, layernorm_forward, "
            "layernorm_backward, ring_allreduce") in out
    assert "batchnorm_forward: not implemented" in out and "Traceback" not in out
    assert "total: 0 of 27 cases pass" in out


def test_minidist_command_has_the_exercise_hook(capsys, tmp_path):
    assert minidist_main(["exercise", "list"]) == 0
    assert "ring_allreduce" in capsys.readouterr().out
    assert minidist_main(["exercise", "check", str(tmp_path)]) == 2  # nothing to grade


def test_the_ring_proxy_counts_every_form_of_send_buffer():
    import numpy as np

    from minidist.exercises.ring_worker import buffer_bytes, object_bytes

    class Double:
        def Get_size(self):
            return 8
    a = np.zeros(10)
    assert buffer_bytes(a) == buffer_bytes([a, Double()]) == 80
    assert buffer_bytes([a, 3, Double()]) == buffer_bytes([a, (3, 0), Double()]) == 24
    assert buffer_bytes(a[:0]) == 0 and buffer_bytes(b"abc") == 3
    assert object_bytes(a) == 80 and object_bytes([1, 2]) > 0


def _by_case(graded):
    return {r.case: r for r in graded.results}


@pytest.mark.mpi
def test_ring_graded_under_mpiexec_1_to_5(tmp_path):
    from minidist.exercises.ring_grader import grade_ring

    names = ("correct", "correct_isend", "ring_allreduce", "ring_too_many_bytes")
    paths = [SOLUTIONS / n / "ring.py" for n in names]
    paths.append(write_mutant("ring_wrong_on_one_rank", tmp_path))
    graded = grade_ring(paths, sizes=(1, 2, 3, 4, 5), case_timeout=60)
    correct, isend, allreduce, too_many, one_rank = (_by_case(graded[p]) for p in paths)
    for right in (correct, isend):
        assert len(right) == 40 and all(r.passed for r in right.values()), \
            [r.line() for r in right.values() if not r.passed]
    assert len(allreduce) == 40
    assert all(r.problem.startswith("not allowed: comm.Allreduce") for r in allreduce.values())
    for n in (3, 4, 5):
        for case in (f"N={n} count 11 float32", f"N={n} count 1001 int64"):
            assert too_many[case].problem.startswith("bytes sent: too many: rank 0 sent "), \
                too_many[case].line()
    assert "rank 0 sent 16016 bytes" in too_many["N=3 count 1001 int64"].problem  # 2 x 8008
    assert too_many["N=2 count 1001 float64"].passed  # for N = 2 the whole array IS 2(N-1)/N
    for n in (2, 3, 4, 5):
        assert one_rank[f"N={n} count 1001 float64"].problem.startswith(f"x on rank {n - 1} at ")
    assert one_rank["N=1 count 11 int64"].passed


@pytest.mark.mpi
def test_ring_deadlock_is_reported_as_a_hang_and_cli_exit_status(tmp_path, capsys):
    from minidist.exercises.ring_grader import grade_ring

    for path, said in ((SOLUTIONS / "ring_deadlock" / "ring.py", "were not run"),
                       (write_mutant("ring_raises_on_rank_1", tmp_path),
                        "; before it, rank 1: ring_allreduce raised ValueError: rank 1 gives up")):
        start = time.perf_counter()
        (result,) = grade_ring([path], sizes=(2,), case_timeout=5)[path].results
        assert time.perf_counter() - start < 60
        assert result.case == "N=2 count 1 float64", result.line()
        assert result.problem.startswith("hang: nothing finished for 5 s") and result.problem.endswith(said)
    assert main(["check", str(SOLUTIONS / "ring_allreduce"), "--ranks", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  N=2 count 11 int64: not allowed: comm.Allreduce" in out and "total: 0 of 8" in out
