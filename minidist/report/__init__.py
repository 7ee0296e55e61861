"""Turn a `scripts/compare.py` run into a Markdown report with PNG plots.

    minidist report runs/compare.jsonl            # -> runs/compare-report/report.md
    write_report("runs/compare.jsonl", "out/")    # the same from Python

The report answers the comparison's three questions: do the strategies compute the same
parameters (max difference from the local reference), what does each cost per rank
(bytes, messages, communication and compute time, memory; medians over steps), and how
does that grow past this machine (the step-cost model's projection, checked first against
the run's own ledger).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cost.stepcost import dense, projection
from . import plots
from .summary import (human_bytes, load_run, model_shape, phase_rows, predicted_vs_measured,
                      strategy_rows)

__all__ = ["write_report", "equal_tolerance", "load_run", "strategy_rows", "phase_rows", "predicted_vs_measured"]

EQUAL_TOL = 1e-10  # float64 runs: the bound for "the same parameters"


def equal_tolerance(dtype) -> float:
    """Largest parameter difference still read as round-off: 1e-10, or 1000 machine epsilons
    of the run's dtype where that is larger (float32: 1.2e-4)."""
    return max(EQUAL_TOL, 1000 * float(np.finfo(np.dtype(dtype)).eps))
PROJECTION_SIZES = (2, 8, 64, 512, 4096)
LARGE_MODEL = 125_000_000  # a GPT-2-small-sized model, for the projection


def _table(head, rows) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _loss(v):
    return "n/a" if v is None else f"{v:.6f}"


def write_report(run, out_dir=None, profile: str = "shm", projection_profile: str = "ib-hdr") -> Path:
    """Write ``report.md`` and its plots for the run at `run`; returns the report's path.
    `profile` predicts this run's times; `projection_profile` the projections."""
    run = Path(run)
    out = Path(out_dir) if out_dir is not None else run.with_name(run.stem + "-report")
    out.mkdir(parents=True, exist_ok=True)
    header, steps = load_run(run)
    cfg, size = header["config"], header["world_size"]
    rows = strategy_rows(header, steps)
    tol = equal_tolerance(cfg.get("dtype", "float64"))
    lines = [f"# Strategy comparison: {cfg.get('model')} (norm={cfg.get('norm')}), {size} ranks",
             "",
             f"{header.get('parameters', '?')} parameters, global batch {cfg.get('batch')} "
             f"(shards {header.get('shard_sizes')}), {cfg.get('steps')} steps, {cfg.get('dtype')}, "
             f"optimizer {cfg.get('optimizer')} (lr {cfg.get('lr')}), seed {cfg.get('seed')}. "
             f"Run `{run}` made {header.get('created', '?')}.", ""]

    lines += ["## Do they compute the same thing?", "",
              f"Largest |parameter - local reference| over all steps and ranks; equal means at most "
              f"{tol:.2g} (round-off in {cfg.get('dtype', 'float64')}).", ""]
    lines += _table(["strategy", "final loss", "max parameter difference", "verdict"],
                    [[r["strategy"], _loss(r["final_loss"]), f"{r['max_param_diff']:.2e}",
                      "reference" if r["strategy"] == "local" else
                      ("equal" if r["max_param_diff"] <= tol else "**differs**")] for r in rows])
    differs = [r["strategy"] for r in rows if r["strategy"] != "local" and r["max_param_diff"] > tol]
    if differs and cfg.get("norm") == "batch" and size > 1:
        lines += ["", "Expected here: with plain BatchNorm each rank normalises with its own shard's "
                  "statistics, not the global batch's, so the distributed strategies train a different "
                  "model (rerun with `--norm sync`: SyncBatchNorm restores equality)."]
    lines += ["", "![training](training.png)", ""]

    lines += ["## What each costs, per rank and step", "",
              "Medians over steps (the first step left out of the timings). Communication time is "
              "the time spent inside the communicator's calls; compute is the rest of the step. "
              "Memory: parameters, gradients, optimizer state and communication buffers, at the "
              "step's peak (activations are the same for every strategy and not counted).", ""]
    lines += _table(["strategy", "rank", "sent", "received", "messages out/in", "comm ms",
                     "compute ms", "optimizer state", "peak memory"],
                    [[r["strategy"], k["rank"], human_bytes(k["bytes_sent"]), human_bytes(k["bytes_received"]),
                      f"{k['messages_sent']:.0f}/{k['messages_received']:.0f}", f"{k['comm_ms']:.2f}",
                      f"{k['compute_ms']:.2f}", human_bytes(k["optimizer_bytes"]), human_bytes(k["peak_bytes"])]
                     for r in rows for k in r["ranks"]])
    lines += ["", "![per rank](per_rank.png)", ""]

    for rank in sorted({0, min(1, size - 1)}):
        lines += [f"### Phase by phase, rank {rank}", ""]
        lines += _table(["strategy", "phase", "sent", "received", "messages out/in", "ms"],
                        [[p["strategy"], p["phase"], human_bytes(p["bytes_sent"]),
                          human_bytes(p["bytes_received"]),
                          f"{p['messages_sent']:.0f}/{p['messages_received']:.0f}", f"{p['ms']:.3f}"]
                         for p in phase_rows(header, steps, rank)])
        lines.append("")

    checks = predicted_vs_measured(header, steps, profile)
    if checks:
        lines += ["## Measured beside predicted", "",
                  f"Bytes and messages from the closed forms (`minidist.parallel.stepcost`), which "
                  f"must equal the ledger; time from the alpha-beta-gamma model with profile "
                  f"`{profile}`. This machine runs {size} ranks on few cores, so measured times "
                  f"include waiting for a core: read them as an upper bound.", ""]
        lines += _table(["strategy", "rank", "bytes predicted", "bytes measured", "messages predicted",
                         "messages measured", "ms predicted", "ms measured"],
                        [[c["strategy"], c["rank"], c["predicted_bytes"], f"{c['measured_bytes']:.0f}",
                          c["predicted_messages"], f"{c['measured_messages']:.0f}",
                          f"{c['predicted_ms']:.3f}", f"{c['measured_ms']:.3f}"] for c in checks])
        lines.append("")

    shape = model_shape(header)
    for label, model, fname in (("this model", shape, "projection.png"),
                                (f"a {LARGE_MODEL / 1e6:.0f}M-parameter float32 model",
                                 dense(LARGE_MODEL, n_tensors=150), "projection_large.png")):
        if model is None:
            continue
        proj = projection(model, sizes=PROJECTION_SIZES, profile=projection_profile)
        lines += [f"## Projection: {label} on `{projection_profile}`", "",
                  "Predicted communication per training step, one rank per node (SGD with momentum).", ""]
        lines += _table(["strategy", "ranks", "comm time", "rank 0 in + out", "other rank in + out",
                         "rank 0 peak memory"],
                        [[p["strategy"], p["size"], f"{p['seconds'] * 1e3:.3f} ms", human_bytes(p["rank0_bytes"]),
                          human_bytes(p["other_bytes"]), human_bytes(p["rank0_peak_bytes"])] for p in proj])
        plots.projection(proj, out / fname, f"{label}, {projection_profile}")
        lines += ["", f"![projection]({fname})", ""]

    plots.training(header, steps, out / "training.png")
    plots.per_rank(rows, out / "per_rank.png")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
