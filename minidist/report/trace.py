"""trace.json: a run's per-rank spans as Chrome trace events (Perfetto, chrome://tracing).

One process per strategy (``pid``, named by a ``process_name`` metadata event), one
thread per rank (``tid`` = rank, ``thread_name`` "rank r"), and one complete event
(``"ph": "X"``, microseconds on the common clock, from the run's first event) per span:
forward, backward, step, optimizer, each collective call (args: phase, wait_us,
transfer_us), each wait, each ring step (args: bytes, peers). Written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text

__all__ = ["write_trace", "load_trace", "trace_path"]


def trace_path(run) -> Path:
    """Where compare.py writes the trace of the run at `run`: beside its report."""
    run = Path(run)
    return run.with_name(run.stem + "-report") / "trace.json"


def trace_events(parts, strategies) -> list[dict]:
    """Chrome events from `parts`: ``[{"strategy", "rank", "events": [(name, cat, start,
    end, args)]}]`` with common-clock seconds; `strategies` fixes the process order."""
    starts = [e[2] for p in parts for e in p["events"]]
    origin = min(starts) if starts else 0.0
    out = []
    for pid, name in enumerate(strategies, 1):
        out.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
                    "args": {"sort_index": pid}})
        for part in (p for p in parts if p["strategy"] == name):
            rank = part["rank"]
            out.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": rank,
                        "args": {"name": f"rank {rank}"}})
            for ev_name, cat, start, end, args in part["events"]:
                out.append({"name": ev_name, "cat": cat, "ph": "X", "pid": pid, "tid": rank,
                            "ts": round(1e6 * (start - origin), 3),
                            "dur": round(1e6 * max(end - start, 0.0), 3), "args": args})
    return out


def write_trace(path, parts, strategies, clock: dict | None = None) -> Path:
    """Write trace.json at `path` (see the module docstring); returns its path."""
    path = Path(path)
    doc = {"traceEvents": trace_events(parts, strategies), "displayTimeUnit": "ms",
           "otherData": {"clock": clock or {}, "time_unit": "microseconds on rank 0's clock"}}
    write_text(path, json.dumps(doc))
    return path


def load_trace(path) -> dict:
    """``{strategy: {rank: [event dicts]}}`` of the complete events in a trace.json."""
    doc = json.loads(Path(path).read_text())
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    out: dict = {name: {} for name in names.values()}
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            out[names[e["pid"]]].setdefault(e["tid"], []).append(e)
    return out
