"""The report's time section: compute, transfer and waiting per rank; measured beside the
model calibrated on this machine; a glossary of the phase names.

Waiting is the part of a collective call spent before its last participant entered (on
the common clock, see minidist.comm.timeline); transfer is the rest of the call; compute
is the step's wall time outside collective calls. The model predicts transfer: it
assumes every rank enters together, on a core of its own. When ranks outnumber cores it
also gives the serialised time (`shared_profile`: bytes and calls N/C times slower, each
message at least the step latency measured with every rank running). Each plot writes its series to a JSON file
beside the PNG, taken from the very rows of the table beside it.
"""
from __future__ import annotations

from pathlib import Path
from statistics import median

from ..cost.profiles import Profile, get_profile, load_profile
from .summary import PREDICTABLE, _timed, model_shape, predict_variant

GLOSSARY = {
    "forward": "the model's forward pass and the loss, on this rank's shard",
    "backward": "the backward pass (DDP's bucket rings start and progress inside it)",
    "step": "model.step(optimizer): the communication left after backward, then the update",
    "optimizer": "the optimizer's update itself (inside step)",
    "compute": "step wall time outside collective calls",
    "transfer": "time inside collective calls after their last participant entered: moving and reducing data",
    "wait": "time inside collective calls before their last participant entered",
    "scatter": "dp with scatter_inputs: rank 0 sends each rank its rows of the batch",
    "shard-sizes": "learning the global sample count for exact sample weighting",
    "grad-gather": "dp: every rank's gradients gathered to rank 0",
    "grad-reduce": "hub: gradients summed onto rank 0",
    "grad-broadcast": "hub: the averaged gradient sent from rank 0 to every rank",
    "param-broadcast": "dp: the updated parameters sent from rank 0 to every rank",
    "grad-allreduce": "ddp: gradients all-reduced by ring, bucket by bucket",
    "buffer-broadcast": "rank 0's buffers (BatchNorm running statistics) sent to every rank",
    "init-broadcast": "rank 0's initial parameters and buffers sent to every rank (at wrap)",
    "verify": "checks that every rank holds the same model (at wrap, or static_graph's order)",
    "unused-bitmap": "ddp find_unused_parameters: which parameters had a gradient on any rank",
    "output-gather": "dp loss_on_root: the outputs gathered to rank 0",
    "output-grad-scatter": "dp loss_on_root: the output gradients sent back from rank 0",
    "syncbn": "SyncBatchNorm's exchange of per-rank (count, mean, M2) statistics",
    "eval": "evaluation counts summed across ranks",
    "drift-check": "check_replicas=True: rank 0 gathers every rank's parameter digest and broadcasts the verdict",
    "checkpoint": "saving or loading a checkpoint: the ranks agree that every rank found no problem",
    "default": "messages sent outside any named phase",
}


def _call_seconds(r) -> float:
    return r.get("call_seconds", r["comm_seconds"])


def split_rows(header, steps) -> list[dict]:
    """Per strategy and rank: medians over the timed steps of compute, transfer and wait
    milliseconds (the table and the bar chart)."""
    rows = []
    for name in header["strategies"]:
        for rank in range(header["world_size"]):
            own = _timed([r for r in steps if r["strategy"] == name and r["rank"] == rank])
            if not own:
                continue
            wait = [r.get("wait_seconds", 0.0) for r in own]
            rows.append({"strategy": name, "rank": rank,
                         "compute_ms": 1e3 * median(max(r["wall_seconds"] - _call_seconds(r), 0.0) for r in own),
                         "transfer_ms": 1e3 * median(_call_seconds(r) - w for r, w in zip(own, wait)),
                         "wait_ms": 1e3 * median(wait)})
    return rows


def calibrated_profile(header) -> Profile | None:
    """The profile compare.py calibrated for this run (None for older runs)."""
    cal = header.get("calibration")
    return None if cal is None else Profile.from_dict(cal["profile"])


def run_profile(header) -> Profile:
    """The profile the run asked for: calibrated here, named (--profile), else "shm"."""
    calibrated = calibrated_profile(header)
    if calibrated is not None:
        return calibrated
    name = header.get("config", {}).get("profile")
    try:
        if name and name != "calibrated":
            return load_profile(name) if name.endswith(".json") else get_profile(name)
    except (OSError, ValueError):
        pass  # a profile file since moved: fall back
    return get_profile("shm")


def model_rows(header, steps, profile) -> list[dict]:
    """Per predictable strategy: measured transfer per step (median over steps of the
    slowest rank's), the model's one-core-per-rank time, the serialised time when ranks
    outnumber cores, and measured / predicted (against the serialised time then)."""
    shape, size = model_shape(header), header["world_size"]
    if shape is None or size < 2:
        return []
    cores = header.get("cores") or size
    config, rows = header["config"], []
    for name in header["strategies"]:
        if name not in PREDICTABLE:
            continue
        cost = predict_variant(name, config, size, shape, profile)
        predicted = 1e3 * cost["seconds"]
        timed = _timed([r for r in steps if r["strategy"] == name])
        per_step = {}
        for r in timed:
            transfer = _call_seconds(r) - r.get("wait_seconds", 0.0)
            per_step[r["step"]] = max(per_step.get(r["step"], 0.0), transfer)
        measured = 1e3 * median(per_step.values())
        serialised = (1e3 * predict_variant(name, config, size, shape, shared_profile(header, profile))["seconds"]
                      if size > cores else None)
        rows.append({"strategy": name, "measured_ms": measured, "predicted_ms": predicted,
                     "serialised_ms": serialised, "rank0_busy_ms": _busy_ms(cost["rank0"], profile),
                     "other_busy_ms": _busy_ms(cost["other"], profile),
                     "ratio": measured / (serialised or predicted) if predicted > 0 else None})
    return rows


def shared_profile(header, profile) -> Profile:
    """`profile` with N ranks sharing C < N cores: each byte and each call's software work
    takes N/C times as long (every rank runs, or spins, on a share of a core), and a
    message at least the per-step latency measured with every rank running, where the
    calibration has it (a step waits for its neighbour to be scheduled)."""
    size, cores = header["world_size"], header.get("cores") or header["world_size"]
    share = size / cores
    latency = (header.get("calibration") or {}).get("step_latency_all", 0.0)
    return profile.with_(alpha=max(profile.alpha, latency), beta=profile.beta * share,
                         gamma=profile.gamma * share, call_overhead=profile.call_overhead * share,
                         rendezvous_alpha=None if profile.rendezvous_alpha is None
                         else max(profile.rendezvous_alpha, latency))


def _busy_ms(counts, profile) -> float:
    """The model's time one rank spends on its own messages: alpha per message and beta per
    byte on its busier direction (a rank sends and receives at once)."""
    return 1e3 * (profile.alpha * max(counts["messages_sent"], counts["messages_received"])
                  + profile.beta * max(counts["bytes_sent"], counts["bytes_received"]))


def _table(head, rows) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _preamble(header, profile) -> list[str]:
    size, cores = header["world_size"], header.get("cores")
    lines = ["## Time: compute, transfer and waiting", ""]
    if cores and size > cores:
        lines += [f"**{size} ranks share {cores} cores**: a rank often waits for a core, not for "
                  "data, so measured times are inflated; the model's times for one core per rank "
                  f"stand beside them, with the serialised time (the ranks sharing the cores).", ""]
    clock = header.get("clock")
    if clock:
        lines += [f"Times are on one clock for all ranks (rank 0's; offsets by ping-pong, error at "
                  f"most {1e6 * clock['bound_seconds']:.1f} µs).", ""]
    cal = header.get("calibration")
    where = ("a profile given to the run or the report, not the one compare measured here"
             if profile.name == "calibrated" else "nominal figures of a named profile, not measured here")
    if cal and Profile.from_dict(cal["profile"]) == profile:  # the one compare measured here
        spread = ", ".join(f"{k} {v:.0%}" for k, v in cal["spread"].items())
        where = (f"calibrated on {cal['host']} with {cal['ranks']} ranks on {cal['cores']} cores "
                 f"({'cached' if cal.get('cached') else 'measured'} {cal['created']}); spread {spread}: "
                 f"{cal['verdict']}; a ring step with every rank running took "
                 f"{1e6 * cal.get('step_latency_all', 0.0):.1f} µs")
    lines += [f"Model: profile `{profile.name}`: alpha {1e6 * profile.alpha:.2f} µs, beta "
              f"{1e9 * profile.beta:.3f} ns/B, gamma {1e9 * profile.gamma:.3f} ns/B, per-call "
              f"overhead {1e6 * profile.call_overhead:.1f} µs; {where}.", ""]
    return lines


def section(header, steps, out: Path, profile=None, trace=None) -> list[str]:
    """Markdown lines of the time section; writes time_split.png (+ .json) and, given
    `trace` (a trace.json path), gantt.png (+ .json)."""
    from . import timeplots

    profile = get_profile(profile) if profile is not None else run_profile(header)
    lines = _preamble(header, profile)
    split = split_rows(header, steps)
    lines += ["Medians over steps (the first left out). Per rank and step: compute (outside "
              "collective calls), transfer and wait (inside them).", ""]
    lines += _table(["strategy", "rank", "compute ms", "transfer ms", "wait ms"],
                    [[r["strategy"], r["rank"], _ms(r["compute_ms"]), _ms(r["transfer_ms"]),
                      _ms(r["wait_ms"])] for r in split])
    timeplots.split_bars(split, out / "time_split.png")
    lines += ["", "![compute, transfer, wait](time_split.png)", ""]
    model = model_rows(header, steps, profile)
    if model:
        lines += ["### Measured beside the model", "",
                  "Measured: transfer per step, the slowest rank's (waiting left out: the model assumes "
                  "every rank enters together). Predicted: alpha per message + beta per byte + gamma "
                  "per byte reduced + the per-call overhead, over the step's collectives, one core per "
                  "rank; it includes no compute and no waiting. Serialised: the same with the ranks "
                  "sharing this machine's cores. The ratio is measured / predicted (serialised "
                  "where ranks outnumber cores). Busy: the model's time each rank spends on its own "
                  "messages (alpha per message, beta per byte, its busier direction): where rank 0's "
                  "is far above the others', rank 0 is the hot spot.", ""]
        lines += _table(["strategy", "measured ms", "predicted ms (core per rank)",
                         "predicted ms (serialised)", "measured / predicted", "busy ms rank 0 / other"],
                        [[m["strategy"], _ms(m["measured_ms"]), _ms(m["predicted_ms"]),
                          _ms(m["serialised_ms"]), "n/a" if m["ratio"] is None else f"{m['ratio']:.2f}",
                          f"{m['rank0_busy_ms']:.3f} / {m['other_busy_ms']:.3f}"]
                         for m in model])
        lines.append("")
    shown = []
    if trace is not None and Path(trace).exists():
        shown = timeplots.gantt(trace, out / "gantt.png")
    if shown:
        lines += ["### Timeline", "", f"Steps {shown} of every strategy from `trace.json` (open it in "
                  "https://ui.perfetto.dev or chrome://tracing for every step): one row per rank; "
                  "hatched red is waiting.", "", "![timeline](gantt.png)", ""]
    lines += _glossary(steps)
    return lines


def _glossary(steps) -> list[str]:
    seen = {ph for r in steps for ph in r.get("phases", {})}
    names = ["forward", "backward", "step", "optimizer", "compute", "transfer", "wait"]
    names += sorted(seen & set(GLOSSARY))
    lines = ["### Glossary", ""] + [f"- **{n}**: {GLOSSARY[n]}" for n in names]
    unknown = sorted(seen - set(GLOSSARY))
    if unknown:
        lines.append(f"- not described here: {', '.join(unknown)}")
    return lines + [""]
