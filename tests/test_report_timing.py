"""compare.py's time outputs: trace.json (tracks, nesting, overlap), wait_seconds in the
JSONL, the clock bound in the header, and the time section's plots drawn from its tables."""
import json
import re
from pathlib import Path

import pytest

from mpi_util import ROOT, check, launch

N = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("timing")
    monkeypatch_module.setenv("MINIDIST_CACHE", str(out / "cache"))
    check(launch(N, ROOT / "scripts" / "compare.py", "--steps", "3", "--hidden", "48",
                 "--strategies", "dp,ddp,ddp-no-overlap", "--bucket-cap-mb", "0.01",
                 "--out", str(out / "run.jsonl"), timeout=240))
    lines = [json.loads(x) for x in (out / "run.jsonl").read_text().splitlines()]
    return {"dir": out / "run-report", "header": lines[0], "steps": lines[1:],
            "trace": json.loads((out / "run-report" / "trace.json").read_text())}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _spans(trace, strategy):
    pid = next(e["pid"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"
               and e["args"]["name"] == strategy)
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == pid]


@pytest.mark.mpi
def test_trace_has_one_process_per_strategy_and_one_track_per_rank(run):
    meta = [e for e in run["trace"]["traceEvents"] if e["ph"] == "M"]
    names = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert sorted(names.values()) == sorted(run["header"]["strategies"])
    for pid in names:
        tracks = sorted(e["tid"] for e in meta if e["name"] == "thread_name" and e["pid"] == pid)
        assert tracks == list(range(N))
    for e in run["trace"]["traceEvents"]:
        if e["ph"] == "X":
            assert e["dur"] >= 0 and isinstance(e["ts"], float)


@pytest.mark.mpi
def test_ring_steps_nest_in_their_bucket_and_overlap_backward(run):
    for strategy, overlap in (("ddp", True), ("ddp-no-overlap", False)):
        spans = [e for e in _spans(run["trace"], strategy) if isinstance(e["args"].get("step"), int)]
        buckets = [e for e in spans if e["name"] == "ring_allreduce bucket"]
        steps = [e for e in spans if e["cat"] == "ring"]
        assert len({b["args"]["tag"] for b in buckets}) >= 2  # a model of >= 2 buckets
        assert len(steps) == 2 * (N - 1) * len(buckets)
        for s in steps:
            (bucket,) = [b for b in buckets if b["tid"] == s["tid"] and b["args"]["tag"] == s["args"]["tag"]
                         and b["args"]["step"] == s["args"]["step"]]
            assert bucket["ts"] <= s["ts"] and s["ts"] + s["dur"] <= bucket["ts"] + bucket["dur"] + 1e-3
        backward = {(e["tid"], e["args"]["step"]): e["ts"] + e["dur"] for e in spans if e["name"] == "backward"}
        early = [s for s in steps if s["ts"] < backward[s["tid"], s["args"]["step"]]]
        assert bool(early) == overlap, strategy


@pytest.mark.mpi
def test_jsonl_has_waits_per_phase_and_the_header_states_the_clock_bound(run):
    assert run["header"]["clock"]["bound_seconds"] >= 0
    assert run["header"]["calibration"]["profile"]["alpha"] > 0
    for r in run["steps"]:
        if r["strategy"] == "local":
            continue
        assert all("wait_seconds" in ph for ph in r["phases"].values())
        assert r["wait_seconds"] == pytest.approx(sum(ph["wait_seconds"] for ph in r["phases"].values()))
        assert 0 <= r["wait_seconds"] <= r["call_seconds"] + 1e-9


def _table_after(text, heading_start):
    block = text.split(heading_start, 1)[1]
    rows = [line for line in block.splitlines() if line.startswith("| ")]
    head, out = None, []
    for line in block.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if head is None:
                head = cells
            else:
                out.append(dict(zip(head, cells)))
        elif head is not None and not line.startswith("|"):
            break
    return rows and out


@pytest.mark.mpi
def test_the_time_plots_draw_the_numbers_of_their_tables(run):
    text = (run["dir"] / "report.md").read_text()
    table = _table_after(text, "Per rank and step: compute")
    bars = json.loads((run["dir"] / "time_split.json").read_text())["bars"]
    assert len(table) == len(bars) == N * len(run["header"]["strategies"])
    for row, bar in zip(table, bars):
        assert (row["strategy"], int(row["rank"])) == (bar["strategy"], bar["rank"])
        for col, key in (("compute ms", "compute_ms"), ("transfer ms", "transfer_ms"), ("wait ms", "wait_ms")):
            assert float(row[col]) == pytest.approx(bar[key], abs=5e-4)
    assert "![timeline](gantt.png)" in text and "### Glossary" in text
    for phase in {ph for r in run["steps"] for ph in r["phases"]}:
        assert re.search(rf"\*\*{re.escape(phase)}\*\*: ", text), phase


@pytest.mark.mpi
def test_the_gantt_draws_the_trace_events_of_two_steps(run):
    drawn = json.loads((run["dir"] / "gantt.json").read_text())
    assert drawn["spans"] and len(drawn["steps"]) == 2
    names = {e["pid"]: e["args"]["name"] for e in run["trace"]["traceEvents"] if e["name"] == "process_name"}
    events = {(names[e["pid"]], e["tid"], e["name"], e["ts"], e["dur"]): e["args"]["step"]
              for e in run["trace"]["traceEvents"] if e["ph"] == "X"}
    for s in drawn["spans"]:
        assert events[s["strategy"], s["rank"], s["name"], s["ts"], s["dur"]] in drawn["steps"]
        assert s["dur_ms"] == pytest.approx(s["dur"] / 1e3)
