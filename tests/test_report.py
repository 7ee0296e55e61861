"""The report of a compare.py run, and the `minidist` command."""
import json
import re

import pytest

from minidist.cli import main as cli
from minidist.report import load_run, predicted_vs_measured, strategy_rows, write_report
from mpi_util import ROOT, check, launch

N, STEPS, BATCH = 3, 4, 40  # shards 14, 13, 13


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run.jsonl"
    proc = check(launch(N, ROOT / "scripts" / "compare.py", "--norm", "layer", "--steps", STEPS,
                        "--batch", BATCH, "--hidden", 24, "--strategies", "local,dp,hub,ddp,ddp-fp16",
                        "--bucket-cap-mb", 0.004, "--out", out, timeout=180, mpi4py=False))
    return out, proc.stdout


def test_compare_writes_the_report_with_its_plots(run):
    out, stdout = run
    report = out.with_name("run-report") / "report.md"
    assert f"report: {report}" in stdout
    text = report.read_text()
    for section in ("## Do they compute the same thing?", "## What each costs, per rank and step",
                    "### Phase by phase, rank 0", "## Measured beside predicted", "## Projection"):
        assert section in text
    for png in ("training.png", "per_rank.png", "projection.png", "projection_large.png"):
        assert (report.parent / png).stat().st_size > 5000
    verdicts = dict(re.findall(r"^\| (dp|hub|ddp|ddp-fp16) \| [\d.]+ \| [\de.+-]+ \| ([^|]+) \|$", text, re.M))
    assert verdicts == {"dp": "equal", "hub": "equal", "ddp": "equal", "ddp-fp16": "**differs**"}


def test_predicted_counts_equal_the_measured_ones(run):
    header, steps = load_run(run[0])
    checks = predicted_vs_measured(header, steps)
    assert {(c["strategy"], c["rank"]) for c in checks} == {(s, k) for s in ("dp", "hub", "ddp") for k in (0, 1)}
    for c in checks:
        assert c["predicted_bytes"] == c["measured_bytes"] > 0
        assert c["predicted_messages"] == c["measured_messages"] > 0


def test_rows_show_the_root_load_and_the_global_loss(run):
    header, steps = load_run(run[0])
    rows = {r["strategy"]: r for r in strategy_rows(header, steps)}
    for name in ("dp", "hub"):
        root, other = rows[name]["ranks"][0], rows[name]["ranks"][1]
        assert root["bytes_received"] > (N - 1) * 0.99 * other["bytes_sent"]
    ddp = [k["bytes_sent"] for k in rows["ddp"]["ranks"]]
    assert max(ddp) < 1.1 * min(ddp)  # the ring spreads the load
    assert rows["dp"]["ranks"][1]["optimizer_bytes"] == 0 < rows["dp"]["ranks"][0]["optimizer_bytes"]
    assert rows["ddp"]["final_loss"] == pytest.approx(rows["local"]["final_loss"], rel=1e-9)


def test_report_command_rewrites_it_elsewhere(run, tmp_path, capsys):
    assert cli(["report", str(run[0]), "--out", str(tmp_path)]) == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "report.md").exists()


def test_a_file_that_is_not_a_run_is_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"type": "header", "config": {}}) + "\n")
    with pytest.raises(ValueError, match="needs a header record and step records"):
        write_report(bad)
    bad.write_text(json.dumps({"type": "epoch"}) + "\n")
    with pytest.raises(ValueError, match="unknown record type 'epoch'"):
        load_run(bad)


def test_predict_command_prints_the_projection(capsys):
    assert cli(["predict", "--params", "1e6", "--ranks", "2,16", "--profile", "10gbe"]) == 0
    out = capsys.readouterr().out
    assert "1,000,000 float32 parameters" in out and "profile 10gbe" in out
    assert len([line for line in out.splitlines() if re.match(r"\s+(dp|hub|ddp)\s+(2|16)\s", line)]) == 6
    assert cli(["profiles"]) == 0 and "ib-hdr" in capsys.readouterr().out


def test_round_off_bound_follows_the_dtype():
    from minidist.report import equal_tolerance

    assert equal_tolerance("float64") == 1e-10
    assert equal_tolerance("float32") == pytest.approx(1000 * 2 ** -23)


def test_batchnorm_difference_is_explained(tmp_path):
    header = {"type": "header", "config": {"norm": "batch", "dtype": "float64", "steps": 1},
              "world_size": 2, "strategies": ["local", "ddp"]}
    memory = {"parameters": 8, "gradients": 8, "optimizer": 0, "comm_buffers": 0, "comm_peak": 0,
              "total": 16, "peak": 16}
    steps = [{"type": "step", "strategy": s, "step": 0, "rank": k, "samples": 2, "loss": 1.0,
              "accuracy": 0.5, "max_param_diff": 0.0 if s == "local" else 0.3, "phases": {},
              "comm_seconds": 0.0, "compute_seconds": 0.001, "wall_seconds": 0.001, "memory": memory}
             for s in ("local", "ddp") for k in range(2)]
    run = tmp_path / "bn.jsonl"
    run.write_text("\n".join(json.dumps(r) for r in [header] + steps) + "\n")
    text = write_report(run).read_text()
    assert "| ddp | 1.000000 | 3.00e-01 | **differs** |" in text
    assert "its own shard's statistics" in text and "--norm sync" in text


def test_a_calibrated_profile_serves_report_and_predict(run, tmp_path, capsys, monkeypatch):
    import subprocess
    import sys

    profile = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, "-m", "minidist.cli", "calibrate", "-n", "2", "--quick", "--out",
                           str(profile)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and profile.exists(), proc.stderr
    assert cli(["report", str(run[0]), "--out", str(tmp_path / "a"), "--profile", str(profile)]) == 0
    assert "with profile `calibrated`" in (tmp_path / "a" / "report.md").read_text()
    monkeypatch.setenv("MINIDIST_PROFILE", str(profile))  # the documented default of every --profile
    assert cli(["report", str(run[0]), "--out", str(tmp_path / "b")]) == 0
    assert "with profile `calibrated`" in (tmp_path / "b" / "report.md").read_text()
    assert cli(["predict", "--params", "1e6", "--ranks", "2"]) == 0
    assert "profile calibrated" in capsys.readouterr().out
    monkeypatch.delenv("MINIDIST_PROFILE")
    assert cli(["report", str(run[0]), "--out", str(tmp_path / "c")]) == 0  # the run's own: measured
    own = (tmp_path / "c" / "report.md").read_text()  # by compare on this machine as it ran
    assert "with profile `calibrated`" in own and f"with {N} ranks on" in own
    assert f"with {N} ranks on" not in (tmp_path / "a" / "report.md").read_text()


def test_predict_and_the_reports_125m_projection_agree(run, capsys):
    text = (run[0].with_name("run-report") / "report.md").read_text()
    section = text.split("## Projection: a 125M-parameter float32 model in 148 tensors on `ib-hdr`")[1]
    in_report = {(s, int(n)): float(ms) for s, n, ms in re.findall(r"^\| (dp|hub|ddp) \| (\d+) \| ([\d.]+) ms", section, re.M)}
    assert cli(["predict", "--ranks", "2,8,64,512,4096", "--profile", "ib-hdr"]) == 0
    out = capsys.readouterr().out
    assert "125,000,000 float32 parameters in 148 tensors" in out
    printed = {(s, int(n)): float(ms) for s, n, ms in re.findall(r"^\s+(dp|hub|ddp)\s+(\d+)\s+([\d.]+) ms", out, re.M)}
    assert len(printed) == 15 and set(printed) <= set(in_report)
    for key, ms in printed.items():
        assert ms == in_report[key], key  # the same function, the same tensors, the same digits
