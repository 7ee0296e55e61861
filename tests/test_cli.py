"""The `minidist` command without MPI: help, predict, profiles, report, and one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minidist.cli import build_parser, main as cli
from minidist.cli_mpiexec import command, python_argv
from minidist.compare_options import new_run_folder, run_paths
from mpi_util import ROOT

COMMANDS = ("run", "compare", "report", "predict", "profiles", "calibrate", "lab", "exercise", "bench")


def _one_error_line(capsys, code, *words):
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minidist: error: "), err
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("name", COMMANDS)
def test_every_subcommand_has_a_description_an_example_and_defaults(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    if name != "exercise":  # the exercises package owns its own help
        assert "example:\n  minidist " + name in out
    if name in ("compare", "predict", "calibrate", "bench"):
        assert "(default: " in out


@pytest.mark.parametrize("argv, words", [
    (["predict", "--profile", "infiniband"], ["--profile", "infiniband", "ib-hdr"]),
    (["predict", "--dtype", "int8"], ["--dtype", "int8"]),
    (["predict", "--bucket-cap-mb", "0"], ["--bucket-cap-mb", "'0'"]),
    (["predict", "--params", "lots"], ["--params", "lots"]),
    (["predict", "--params", "-5"], ["--params", "-5"]),
    (["predict", "--tensors", "0"], ["--tensors", "'0'"]),
    (["predict", "--params", "10", "--tensors", "20"], ["--tensors 20", "--params 10"]),
    (["predict", "--ranks", "2,many"], ["--ranks", "many"]),
    (["predict", "--strategies", "dp,zero"], ["--strategies", "zero"]),
    (["predict", "--optimizer-slots", "1.5"], ["--optimizer-slots", "1.5"]),
    (["predict", "--model", "mlp", "--params", "1e6"], ["--model mlp", "--params"]),
    (["predict", "--frobnicate"], ["--frobnicate"]),
    (["report", "runs/compare.json"], ["runs/compare.json", "no such run"]),
    (["report", "."], ["no run.jsonl"]),
    (["compare", "-n", "2", "--steps", "0"], ["--steps", "'0'"]),
    (["compare", "-n", "2", "--batch", "1201"], ["--batch 1201", "1200 samples"]),
    (["compare", "-n", "2", "--samples", "0"], ["--samples", "'0'"]),
    (["compare", "-n", "2", "--hidden", "0"], ["--hidden", "'0'"]),
    (["compare", "-n", "2", "--bucket-cap-mb", "0"], ["--bucket-cap-mb"]),
    (["compare", "-n", "2", "--profile", "infiniband"], ["--profile", "infiniband"]),
    (["compare", "-n", "zero"], ["-n", "zero"]),
    (["run", "-n", "2"], ["nothing to launch"]),
    (["calibrate", "-n", "1", "--out", "x.json"], ["-n 1", "2 or more"]),
    (["calibrate", "--out", "/no/such/folder/p.json"], ["--out", "/no/such/folder"]),
    (["bench", "nope"], ["nope"]),
])
def test_bad_values_are_one_line_naming_the_option(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINIDIST_PROFILE", raising=False)
    _one_error_line(capsys, cli(argv), *words)
    assert not (tmp_path / "runs").exists()  # nothing was started or written


def test_a_bad_profile_file_and_environment_value_are_named(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    _one_error_line(capsys, cli(["predict", "--profile", str(bad)]), str(bad), "not a valid profile")
    monkeypatch.setenv("MINIDIST_PROFILE", "infiniband")
    _one_error_line(capsys, cli(["predict"]), "MINIDIST_PROFILE", "infiniband")


def test_a_damaged_run_file_names_the_file_and_line(tmp_path, capsys):
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps({"type": "header", "config": {}}) + "\n{\"type\": \"st\n")
    _one_error_line(capsys, cli(["report", str(run)]), f"{run}:2", "damaged")


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="int8"):
        cli(["predict", "--dtype", "int8", "--debug"])


def test_a_real_process_exits_2_with_one_line_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "minidist.cli", "predict", "--profile", "infiniband"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_predict_states_its_tensors_and_uses_compares_model(capsys):
    assert cli(["predict", "--params", "125e6", "--ranks", "4096", "--strategies", "ddp"]) == 0
    out = capsys.readouterr().out
    assert "125,000,000 float32 parameters in 148 tensors" in out
    assert cli(["predict", "--params", "125e6", "--tensors", "100", "--ranks", "4096"]) == 0
    assert "in 100 tensors" in capsys.readouterr().out
    assert cli(["predict", "--model", "mlp", "--hidden", "24", "--ranks", "2"]) == 0
    # compare's MLP: 2 -> 24 -> 24 -> 3 (weights and biases)
    assert f"{2 * 24 + 24 + 24 * 24 + 24 + 24 * 3 + 3:,} float64 parameters in 6 tensors" in capsys.readouterr().out


def test_profiles_names_the_environment_default(capsys, monkeypatch):
    monkeypatch.setenv("MINIDIST_PROFILE", "10gbe")
    assert cli(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "MINIDIST_PROFILE='10gbe'" in out and "ib-hdr:" in out


def test_missing_scripts_and_torch_are_named(capsys, monkeypatch):
    import minidist.cli_launch as launch

    monkeypatch.setattr(launch, "CHECKOUT", ROOT / "nowhere")
    _one_error_line(capsys, cli(["bench", "scaling"]), "scripts/bench_scaling.py", "missing")
    _one_error_line(capsys, cli(["lab", "04"]), "labs/run_all.py", "missing")
    monkeypatch.setattr(launch, "CHECKOUT", ROOT)
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: None)
    _one_error_line(capsys, cli(["bench", "engine"]), "pip install", "torch")


def test_run_folders_are_never_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = new_run_folder()[1], new_run_folder()[1]
    assert first != second and first.is_dir() and second.is_dir()
    assert run_paths("x/run7.jsonl") == (Path("x/run7.jsonl"), Path("x/run7-report"))
    assert run_paths("keep")[0].as_posix() == "keep/run.jsonl"


def test_the_launch_line_knows_both_mpi_families(monkeypatch, tmp_path):
    import minidist.cli_mpiexec as m

    hosts = tmp_path / "hosts"
    hosts.write_text("node1\n")
    monkeypatch.setattr(m, "family", lambda exe: "openmpi")
    cmd, env = command(64, ["python", "x.py"], mpiexec=sys.executable, hostfile=str(hosts))
    assert cmd[:5] == [sys.executable, "-n", "64", "--hostfile", str(hosts)]
    assert cmd[-2:] == [sys.executable, "x.py"] and env["OMP_NUM_THREADS"] == "1"
    assert env["MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD"] == str(512 << 10)  # mpich.py's, from the start
    _, env = command(2, ["x"], mpiexec=sys.executable, env={"MPICH_CH4_IPC_CMA_P2P_THRESHOLD": "8192"})
    assert "MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD" not in env  # the user's, under another of its names
    monkeypatch.setattr(m, "family", lambda exe: "mpich")
    cmd, _ = command(2, ["x"], mpiexec=sys.executable, hostfile=str(hosts), mpi_args="-v")
    assert cmd[3:6] == ["-f", str(hosts), "-v"]
    assert python_argv(["python3", "a"]) == [sys.executable, "a"]


def test_a_launcher_inside_a_job_refuses_to_nest(monkeypatch, capsys):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    _one_error_line(capsys, cli(["run", "-n", "2", "--", "python", "-c", "pass"]), "starts its own mpiexec")


def test_every_option_of_every_command_has_help():
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        if name == "exercise":  # its options are the exercises package's
            continue
        for action in parser._actions:
            assert action.help, f"minidist {name} {action.option_strings or action.dest}: no help"


def test_bench_reads_launch_options_written_after_the_bench_name():
    from argparse import Namespace

    from minidist.cli_launch import _bench_arguments

    args = Namespace(which="collectives", n="2", hostfile=None, mpi_args="", mpiexec=None,
                     rest=["-n", "3", "--", "--max-bytes", "4K"])
    assert _bench_arguments(args) == ["--max-bytes", "4K"] and args.n == "3"
    args = Namespace(which="collectives", n="2", hostfile=None, mpi_args="", mpiexec=None,
                     rest=["-n", "4", "--max-bytes", "4K"])  # no --: the script's own flags pass on
    assert _bench_arguments(args) == ["--max-bytes", "4K"] and args.n == "4"


def test_lab_runs_the_named_labs_quick():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "minidist.cli", "lab", "04"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "lab 04" in out.stdout and "1 labs in" in out.stdout and "0 failed" in out.stdout


@pytest.mark.parametrize("value, on", [("1", True), ("yes", True), ("0", False), ("false", False), ("No", False), ("", False)])
def test_minidist_debug_means_the_same_to_the_cli_and_the_communicator(monkeypatch, value, on):
    from minidist.cli_errors import debug_wanted
    from minidist.comm import Communicator

    monkeypatch.setenv("MINIDIST_DEBUG", value)
    assert debug_wanted() is on and Communicator().debug is on


def test_leaked_segments_are_removed_unless_a_live_process_maps_them(tmp_path):
    import mmap

    from minidist import shm_segments

    for name in ("mpich_shm_old", "mpich_shm_gone", "sm_segment.vm.0.1.0", "unrelated"):
        (tmp_path / name).write_bytes(b"x" * 4096)
    before = {str(tmp_path / "mpich_shm_old")}
    with open(tmp_path / "sm_segment.vm.0.1.0", "r+b") as f, mmap.mmap(f.fileno(), 4096):  # a live job's
        assert shm_segments.remove_leaked(before, str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mpich_shm_old", "sm_segment.vm.0.1.0", "unrelated"]


def test_a_segment_only_this_process_maps_goes_when_asked(tmp_path):
    import mmap

    from minidist import shm_segments

    (tmp_path / "sm_segment.vm.0.2.0").write_bytes(b"x" * 4096)
    with open(tmp_path / "sm_segment.vm.0.2.0", "r+b") as f, mmap.mmap(f.fileno(), 4096):
        assert shm_segments.remove_leaked(set(), str(tmp_path)) == 0  # mapped here: kept
        assert shm_segments.remove_leaked(set(), str(tmp_path), including_own=True) == 1
    assert list(tmp_path.iterdir()) == []
