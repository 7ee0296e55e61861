"""Read a `scripts/compare.py` run (JSONL) and reduce it to the numbers a report shows.

A run is a header record and one ``"step"`` record per strategy, step and rank (the
layout is in compare.py's docstring). Everything here is plain Python over those dicts:
medians over steps (the machine is shared and noisy; the first step is left out of the
timings as warm-up when there are more than two), sums over phases, and the prediction of
the same steps by `minidist.cost.stepcost`.
"""
from __future__ import annotations

import json
import warnings
from statistics import median

import numpy as np

from ..cost.stepcost import ModelShape, predict_step

PROJECTION_SIZES = (2, 8, 64, 512, 4096)
LARGE_MODEL = 125_000_000  # a GPT-2-small-sized model, for the projections
LARGE_MODEL_TENSORS = 148  # GPT-2 small's parameter tensors: `minidist predict`'s default too
COUNT_KEYS = ("messages_sent", "messages_received", "bytes_sent", "bytes_received")
# compare.py's variants -> the options the predictor models (None: not modelled)
PREDICTABLE = {"dp": ("dp", {}), "hub": ("hub", {}), "ddp": ("ddp", {}),
               "ddp-no-overlap": ("ddp", {})}


def _records(path):
    """``(line number, record)`` of each JSON line of `path`. A corrupt line raises
    ValueError naming the file and the line; a truncated LAST line (no newline: a writer
    killed while appending) is skipped with a warning that says so."""
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text JSONL run file ({exc})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # the text after the last newline
                warnings.warn(f"{path}:{lineno}: skipped a truncated last line ({exc.msg}); the run "
                              "was cut short while writing", stacklevel=3)
                return
            raise ValueError(f"{path}:{lineno}: not a JSON record ({exc.msg} at column {exc.colno}); "
                             "the run file is damaged: run scripts/compare.py again") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def load_run(path) -> tuple[dict, list[dict]]:
    """(header, step records) of a compare.py JSONL file, with a clear error otherwise."""
    header, steps = None, []
    for lineno, record in _records(path):
        kind = record.get("type")
        if kind == "header":
            header = record
        elif kind == "step":
            steps.append(record)
        else:
            raise ValueError(f"{path}:{lineno}: unknown record type {kind!r}; expected "
                             "'header' or 'step' (is this a scripts/compare.py run?)")
    if header is None or not steps:
        raise ValueError(f"{path}: needs a header record and step records (got header="
                         f"{header is not None}, {len(steps)} steps); run scripts/compare.py first")
    return header, steps


def _timed(records):
    steps = sorted({r["step"] for r in records})
    keep = set(steps[1:]) if len(steps) > 2 else set(steps)
    return [r for r in records if r["step"] in keep]


def global_losses(steps, name) -> tuple[list, list]:
    """(steps, loss over the global batch) of strategy `name`: the sample-weighted mean of
    the ranks' shard losses (equal to the global-batch loss for a mean-reduced loss); the
    local reference already trains on the global batch (rank 0's record); dp with the loss
    on rank 0 reports it there alone."""
    xs, losses = [], []
    for step in sorted({r["step"] for r in steps if r["strategy"] == name}):
        own = [r for r in steps if r["strategy"] == name and r["step"] == step
               and r["loss"] is not None and (name != "local" or r["rank"] == 0)]
        weight = sum(r["samples"] for r in own)
        xs.append(step)
        losses.append(sum(r["loss"] * r["samples"] for r in own) / weight if weight else None)
    return xs, losses


def strategy_rows(header, steps) -> list[dict]:
    """One row per strategy: final loss, worst parameter difference from the reference,
    and per rank the medians of bytes/messages sent and received per step, communication
    and compute milliseconds, and the peak memory."""
    size = header["world_size"]
    rows = []
    for name in header["strategies"]:
        mine = [r for r in steps if r["strategy"] == name]
        final = global_losses(steps, name)[1][-1]
        ranks = []
        for rank in range(size):
            own = [r for r in mine if r["rank"] == rank]
            timed = _timed(own)
            totals = {k: median(sum(ph[k] for ph in r["phases"].values()) for r in own)
                      for k in COUNT_KEYS}
            ranks.append(dict(totals, rank=rank,
                              comm_ms=1e3 * median(r["comm_seconds"] for r in timed),
                              compute_ms=1e3 * median(r["compute_seconds"] for r in timed),
                              peak_bytes=max(r["memory"]["peak"] for r in own),
                              optimizer_bytes=max(r["memory"]["optimizer"] for r in own)))
        rows.append({"strategy": name, "final_loss": final,
                     "max_param_diff": max(r["max_param_diff"] for r in mine),
                     "ranks": ranks})
    return rows


def phase_rows(header, steps, rank: int) -> list[dict]:
    """Per strategy and phase, `rank`'s median counts and milliseconds per step."""
    rows = []
    for name in header["strategies"]:
        own = [r for r in steps if r["strategy"] == name and r["rank"] == rank]
        phases = sorted({ph for r in own for ph in r["phases"]})
        for ph in phases:
            per = [r["phases"].get(ph) for r in own]
            per = [p for p in per if p is not None]
            row = {k: median(p[k] for p in per) for k in COUNT_KEYS}
            row.update(strategy=name, phase=ph, ms=1e3 * median(p["seconds"] for p in per))
            rows.append(row)
    return rows


def model_shape(header) -> ModelShape | None:
    """The model's parameter and buffer sizes, as compare.py recorded them."""
    shape = header.get("model_shape")
    if shape is None:
        return None
    return ModelShape([(c, np.dtype(d)) for c, d in shape["params"]],
                      [(c, np.dtype(d)) for c, d in shape["buffers"]])


def predict_variant(name, config, size, shape, profile) -> dict:
    """`predict_step` for compare.py's variant `name` (in PREDICTABLE) with the run's options."""
    strategy, options = PREDICTABLE[name]
    options = dict(options, average=config.get("average", "samples"))
    if strategy == "ddp":
        options["bucket_cap_mb"] = config.get("bucket_cap_mb", 25.0)
    return predict_step(strategy, size, shape, profile=profile, **options)


def predicted_vs_measured(header, steps, profile="shm") -> list[dict]:
    """For each strategy the predictor models: rank 0's and rank 1's predicted and measured
    counts per step (equal, when the implementation matches its closed forms), and the
    predicted and measured communication milliseconds."""
    shape, size = model_shape(header), header["world_size"]
    if shape is None or size < 2:
        return []
    config = header["config"]
    rows = {r["strategy"]: r for r in strategy_rows(header, steps)}
    out = []
    for name in header["strategies"]:
        if name not in PREDICTABLE:
            continue
        cost = predict_variant(name, config, size, shape, profile)
        for who, rank in (("rank0", 0), ("other", 1)):
            measured = rows[name]["ranks"][rank]
            out.append({"strategy": name, "rank": rank,
                        "predicted_bytes": cost[who]["bytes_sent"] + cost[who]["bytes_received"],
                        "measured_bytes": measured["bytes_sent"] + measured["bytes_received"],
                        "predicted_messages": cost[who]["messages_sent"] + cost[who]["messages_received"],
                        "measured_messages": measured["messages_sent"] + measured["messages_received"],
                        "predicted_ms": 1e3 * cost["seconds"], "measured_ms": measured["comm_ms"]})
    return out



def human_bytes(nbytes: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} TiB"
