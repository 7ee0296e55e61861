"""The report's sections, each a function of one `Context` returning Markdown lines.

`SECTIONS` is the order they appear in; a new section (the timeline, say) is a function
``section(ctx) -> list[str]`` added to that list. A section that draws a plot writes the
PNG (and its series) into ``ctx.out`` and links it by file name; the HTML report embeds it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .summary import (LARGE_MODEL, LARGE_MODEL_TENSORS, PROJECTION_SIZES, human_bytes, model_shape,
                      phase_rows, predicted_vs_measured)


@dataclass
class Context:
    run: Path
    out: Path
    header: dict
    steps: list
    rows: list  # summary.strategy_rows
    tolerance: float
    profile: object  # this machine's Profile: measured beside predicted
    projection_profile: object  # the Profile of the projections
    extra: dict = field(default_factory=dict)


def table(head, rows) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _loss(v):
    return "n/a" if v is None else f"{v:.6f}"


def title(ctx) -> list[str]:
    cfg, size = ctx.header["config"], ctx.header["world_size"]
    return [f"# Strategy comparison: {cfg.get('model')} (norm={cfg.get('norm')}), {size} ranks", "",
            f"{ctx.header.get('parameters', '?')} parameters, global batch {cfg.get('batch')} "
            f"(shards {ctx.header.get('shard_sizes')}), {cfg.get('steps')} steps, {cfg.get('dtype')}, "
            f"optimizer {cfg.get('optimizer')} (lr {cfg.get('lr')}), seed {cfg.get('seed')}. "
            f"Run `{ctx.run}` made {ctx.header.get('created', '?')}.", ""]


def equality(ctx) -> list[str]:
    from . import plots

    cfg = ctx.header["config"]
    lines = ["## Do they compute the same thing?", "",
             f"Largest |parameter - local reference| over all steps and ranks; equal means at most "
             f"{ctx.tolerance:.2g} (round-off in {cfg.get('dtype', 'float64')}).", ""]
    lines += table(["strategy", "final loss", "max parameter difference", "verdict"],
                   [[r["strategy"], _loss(r["final_loss"]), f"{r['max_param_diff']:.2e}",
                     "reference" if r["strategy"] == "local" else
                     ("equal" if r["max_param_diff"] <= ctx.tolerance else "**differs**")] for r in ctx.rows])
    differs = [r for r in ctx.rows if r["strategy"] != "local" and r["max_param_diff"] > ctx.tolerance]
    if differs and cfg.get("norm") == "batch" and ctx.header["world_size"] > 1:
        lines += ["", "Expected here: with plain BatchNorm each rank normalises with its own shard's "
                  "statistics, not the global batch's, so the distributed strategies train a different "
                  "model (rerun with `--norm sync`: SyncBatchNorm restores equality)."]
    plots.training(ctx.header, ctx.steps, ctx.out / "training.png", ctx.tolerance)
    return lines + ["", "![training](training.png)", ""]


def costs(ctx) -> list[str]:
    from . import plots

    lines = ["## What each costs, per rank and step", "",
             "Medians over steps (the first step left out of the timings). Communication time is "
             "the time spent inside the communicator's calls; compute is the rest of the step. "
             "Memory: parameters, gradients, optimizer state and communication buffers, at the "
             "step's peak (activations are the same for every strategy and not counted).", ""]
    lines += table(["strategy", "rank", "sent", "received", "messages out/in", "comm ms",
                    "compute ms", "optimizer state", "peak memory"],
                   [[r["strategy"], k["rank"], human_bytes(k["bytes_sent"]), human_bytes(k["bytes_received"]),
                     f"{k['messages_sent']:.0f}/{k['messages_received']:.0f}", f"{k['comm_ms']:.2f}",
                     f"{k['compute_ms']:.2f}", human_bytes(k["optimizer_bytes"]), human_bytes(k["peak_bytes"])]
                    for r in ctx.rows for k in r["ranks"]])
    plots.per_rank(ctx.rows, ctx.out / "per_rank.png")
    return lines + ["", "![per rank](per_rank.png)", ""]


def phases(ctx) -> list[str]:
    lines = []
    for rank in sorted({0, min(1, ctx.header["world_size"] - 1)}):
        lines += [f"### Phase by phase, rank {rank}", ""]
        lines += table(["strategy", "phase", "sent", "received", "messages out/in", "ms"],
                       [[p["strategy"], p["phase"], human_bytes(p["bytes_sent"]),
                         human_bytes(p["bytes_received"]),
                         f"{p['messages_sent']:.0f}/{p['messages_received']:.0f}", f"{p['ms']:.3f}"]
                        for p in phase_rows(ctx.header, ctx.steps, rank)])
        lines.append("")
    return lines


def measured_vs_predicted(ctx) -> list[str]:
    checks = predicted_vs_measured(ctx.header, ctx.steps, ctx.profile)
    ctx.extra["checks"] = checks
    if not checks:
        return []
    lines = ["## Measured beside predicted", "",
             f"Bytes and messages from the closed forms (`minidist.cost.stepcost`), which "
             f"must equal the ledger; time from the alpha-beta-gamma model with profile "
             f"`{ctx.profile.name}`. Measured time here is all time inside the communicator's calls, "
             f"waiting included; the time section below splits it and puts the model beside it.", ""]
    lines += table(["strategy", "rank", "bytes predicted", "bytes measured", "messages predicted",
                    "messages measured", "ms predicted", "ms measured"],
                   [[c["strategy"], c["rank"], c["predicted_bytes"], f"{c['measured_bytes']:.0f}",
                     c["predicted_messages"], f"{c['measured_messages']:.0f}",
                     f"{c['predicted_ms']:.3f}", f"{c['measured_ms']:.3f}"] for c in checks])
    return lines + [""]


def projections(ctx) -> list[str]:
    from . import plots
    from ..cost.stepcost import dense, projection

    name, lines = ctx.projection_profile.name, []
    large = (f"a {LARGE_MODEL / 1e6:.0f}M-parameter float32 model in {LARGE_MODEL_TENSORS} tensors",
             dense(LARGE_MODEL, n_tensors=LARGE_MODEL_TENSORS), "projection_large.png")
    for label, model, fname in (("this model", model_shape(ctx.header), "projection.png"), large):
        if model is None:
            continue
        proj = projection(model, sizes=PROJECTION_SIZES, profile=ctx.projection_profile)
        lines += [f"## Projection: {label} on `{name}`", "",
                  "Predicted communication per training step, one rank per node, SGD with momentum "
                  "(`minidist predict` prints the same numbers): alpha per message, beta per byte, "
                  "gamma per byte reduced, summed over the step's collectives, plus "
                  f"{1e6 * ctx.projection_profile.call_overhead:.1f} µs of software overhead per "
                  "call; no compute, no waiting.", ""]
        lines += table(["strategy", "ranks", "comm time", "rank 0 in + out", "other rank in + out",
                        "rank 0 peak memory"],
                       [[p["strategy"], p["size"], f"{p['seconds'] * 1e3:.3f} ms", human_bytes(p["rank0_bytes"]),
                         human_bytes(p["other_bytes"]), human_bytes(p["rank0_peak_bytes"])] for p in proj])
        plots.projection(proj, ctx.out / fname, f"{label}, {name}")
        lines += ["", f"![projection]({fname})", ""]
    return lines


def time_split(ctx) -> list[str]:
    """Compute, transfer and waiting per rank, the calibrated model beside, the timeline
    (`timing.section`; docs/timing.md)."""
    from . import resolve_run, timing

    trace = ctx.out / "trace.json"
    if not trace.exists():
        trace = resolve_run(ctx.run)[1] / "trace.json"
    return timing.section(ctx.header, ctx.steps, ctx.out, ctx.profile, trace)


SECTIONS = [title, equality, costs, phases, measured_vs_predicted, time_split, projections]
