"""The time section's PNGs: compute/transfer/wait bars per rank, and a Gantt chart of two
steps per strategy drawn from trace.json. Each writes the numbers it draws to a JSON file
beside the PNG (`plots._save`)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .plots import _save  # noqa: E402
from .trace import load_trace  # noqa: E402

SEGMENTS = (("compute_ms", "compute", "#9ecae1", None), ("transfer_ms", "transfer", "#3182bd", None),
            ("wait_ms", "wait", "#de2d26", "//"))
# lane -> (offset from the row's top, height, colour): compute on top, communication below it
LANES = {"compute": (0.0, 0.4, "#9ecae1"), "comm": (0.45, 0.35, "#969696"), "ring": (0.52, 0.21, "#31a354"),
         "wait": (0.45, 0.35, "#de2d26")}
COMPUTE_COLOURS = {"forward": "#9ecae1", "backward": "#6baed6", "optimizer": "#fd8d3c"}


def split_bars(rows, path) -> None:
    """Stacked bars per strategy and rank: compute, transfer, wait (ms per step)."""
    names = list(dict.fromkeys(r["strategy"] for r in rows))
    size = max(r["rank"] for r in rows) + 1
    width = 0.8 / size
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names) + 2), 4))
    for r in rows:
        x = names.index(r["strategy"]) + (r["rank"] - (size - 1) / 2) * width
        bottom = 0.0
        for key, label, colour, hatch in SEGMENTS:
            ax.bar(x, r[key], width * 0.95, bottom=bottom, color=colour, hatch=hatch, edgecolor="white",
                   label=label if r is rows[0] else None)
            bottom += r[key]
        ax.text(x, bottom, str(r["rank"]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="ms per step (median)", title="per rank (number above the bar): compute, transfer, wait")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, {"bars": [{k: r[k] for k in ("strategy", "rank", "compute_ms", "transfer_ms",
                                                  "wait_ms")} for r in rows]})


def _shown_steps(trace) -> list:
    steps = sorted({e["args"].get("step") for ranks in trace.values() for evs in ranks.values()
                    for e in evs if isinstance(e["args"].get("step"), int)})
    return steps[1:3] if len(steps) > 2 else steps[:2]


def gantt(trace_path, path) -> list:
    """Two steps of every strategy, one row per rank; returns the steps shown."""
    trace = {name: ranks for name, ranks in load_trace(trace_path).items() if ranks}  # local: no events
    shown = _shown_steps(trace)
    if not shown:
        return []
    fig, axes = plt.subplots(len(trace), 1, figsize=(11, 1.0 + 0.55 * sum(len(r) for r in trace.values())),
                             squeeze=False)
    drawn = []
    for ax, (strategy, ranks) in zip(axes[:, 0], trace.items()):
        events = [(rank, e) for rank, evs in ranks.items() for e in evs if e["args"].get("step") in shown]
        origin = min((e["ts"] for _, e in events), default=0.0)
        for rank, e in sorted(events, key=lambda re: ("compute", "comm", "ring", "wait").index(_lane(re[1]))):
            lane = _lane(e)
            low, height, colour = LANES[lane]
            if lane == "compute":
                if e["name"] not in COMPUTE_COLOURS:
                    continue  # "step" encloses the step's communication and the optimizer
                colour = COMPUTE_COLOURS[e["name"]]
            start, dur = (e["ts"] - origin) / 1e3, e["dur"] / 1e3
            ax.broken_barh([(start, dur)], (rank + low - 0.4, height), facecolors=colour,
                           hatch="//" if lane == "wait" else None, edgecolor="none")
            drawn.append({"strategy": strategy, "rank": rank, "name": e["name"], "start_ms": start,
                          "dur_ms": dur, "ts": e["ts"], "dur": e["dur"]})
        ax.set_yticks(sorted(ranks), [f"rank {r}" for r in sorted(ranks)])
        ax.invert_yaxis()
        ax.set_title(strategy, fontsize=9, loc="left")
        ax.set_xlabel("ms from the first event shown")
    handles = [matplotlib.patches.Patch(color=c, label=n) for n, c in COMPUTE_COLOURS.items()]
    handles += [matplotlib.patches.Patch(color=LANES[k][2], label=lbl) for k, lbl in
                (("comm", "collective call"), ("ring", "ring step"), ("wait", "wait"))]
    axes[0, 0].legend(handles=handles, fontsize=7, ncol=6, loc="lower right", bbox_to_anchor=(1, 1.1))
    fig.tight_layout()
    _save(fig, path, {"steps": shown, "spans": drawn})
    return shown


def _lane(event) -> str:
    cat = event.get("cat", "compute")
    return cat if cat in LANES else "compute"
