"""PNG plots of a comparison run (matplotlib, no screen needed), each with its numbers.

Every plot draws a strategy in its `style` (one colour, marker and dash everywhere),
labels each axis with its unit, and writes the series it draws to a JSON file beside the
PNG (`style.series_path`), which the tests compare with the report's tables.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..atomic import atomic_open  # noqa: E402
from .style import COMPUTE_COLOR, THRESHOLD_COLOR, dodge, style, write_series  # noqa: E402
from .summary import global_losses  # noqa: E402

ZERO_FLOOR = 1e-18  # an exact 0 drawn on a log axis


def _worst_diff(steps, name):
    """(steps, max over ranks of max |parameter - reference|)."""
    worst = {}
    for r in steps:
        if r["strategy"] == name:
            worst[r["step"]] = max(worst.get(r["step"], 0.0), r["max_param_diff"])
    xs = sorted(worst)
    return xs, [worst[x] for x in xs]


def _save(fig, path, series) -> None:
    """The PNG and its series, each written atomically (a killed run leaves the old ones)."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    write_series(path, series)


def training(header, steps, path, tolerance: float) -> None:
    """Loss on the global batch per step, and the largest parameter difference from the
    local reference, per strategy; the round-off bound drawn and labelled."""
    names = header["strategies"]
    fig, (ax_loss, ax_diff) = plt.subplots(1, 2, figsize=(12, 4.2))
    series = {"loss": {}, "max_param_diff": {}, "tolerance": tolerance}
    for i, name in enumerate(names):
        x, loss = global_losses(steps, name)
        look, shift = style(name), dodge(i, len(names))
        ax_loss.plot([s + shift for s in x], [float("nan") if v is None else v for v in loss], label=name,
                     linewidth=1.4, markersize=6, **look)
        series["loss"][name] = {"step": x, "loss": loss}
        if name != "local":
            x, diff = _worst_diff(steps, name)
            ax_diff.plot([s + shift for s in x], [max(d, ZERO_FLOOR) for d in diff], label=name,
                         linewidth=1.4, markersize=6, **look)
            series["max_param_diff"][name] = {"step": x, "max_param_diff": diff}
    note = f"markers shifted up to \u00b1{abs(dodge(0, 2)):.2f} step so equal curves stay visible"
    ax_loss.set(title=f"training loss on the global batch\n({note})",
                xlabel="step (global batches seen)", ylabel="cross-entropy loss (nats)")
    ax_diff.axhline(tolerance, color=THRESHOLD_COLOR, linestyle="-", linewidth=1,
                    label=f"round-off bound {tolerance:.0e}")
    ax_diff.set(title=f"largest |parameter - local reference| over ranks\n(0 drawn at {ZERO_FLOOR:.0e}; markers shifted as on the left)",
                xlabel="step (global batches seen)", ylabel="absolute difference (parameter units)",
                yscale="log")
    for ax in (ax_loss, ax_diff):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    _save(fig, path, series)


def _rank_bars(ax, rows, values, ylabel, title, stacked_under=None):
    """One bar per (strategy, rank), coloured by strategy, rank 0 hatched; x labels name both."""
    size = len(rows[0]["ranks"])
    xs, labels = [], []
    for i, r in enumerate(rows):
        look = style(r["strategy"])
        for rank in range(size):
            x = i * (size + 1) + rank
            xs.append(x)
            labels.append(f"{r['strategy']}\nr{rank}" if rank == 0 else f"r{rank}")
            bottom = 0.0
            if stacked_under is not None:
                bottom = stacked_under[i][rank]
                ax.bar(x, bottom, 0.85, color=COMPUTE_COLOR, edgecolor="#555555", linewidth=0.6)
            ax.bar(x, values[i][rank], 0.85, bottom=bottom, color=look["color"], edgecolor="#333333",
                   linewidth=0.6, hatch="//" if rank == 0 else None)
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)


def per_rank(rows, path) -> None:
    """Bytes moved, compute + communication time, and peak memory, per strategy and rank."""
    from matplotlib.patches import Patch

    pick = lambda key, scale=1.0: [[k[key] * scale for k in r["ranks"]] for r in rows]  # noqa: E731
    moved = [[(k["bytes_sent"] + k["bytes_received"]) / 1024 for k in r["ranks"]] for r in rows]
    comm, compute, peak = pick("comm_ms"), pick("compute_ms"), pick("peak_bytes", 1 / 1024)
    fig, axes = plt.subplots(3, 1, figsize=(12, 10))
    _rank_bars(axes[0], rows, moved, "KiB per step", "bytes sent + received per step, per rank (median)")
    _rank_bars(axes[1], rows, comm, "milliseconds per step",
               "wall time per step, per rank (median): compute (grey, below) + communication "
               "(strategy colour, above)", stacked_under=compute)
    _rank_bars(axes[2], rows, peak, "KiB", "peak memory per rank: parameters, gradients, optimizer "
               "state, communication buffers (activations excluded)")
    handles = [Patch(facecolor=style(r["strategy"])["color"], edgecolor="#333333", label=r["strategy"])
               for r in rows]
    handles += [Patch(facecolor=COMPUTE_COLOR, edgecolor="#555555", label="compute"),
                Patch(facecolor="white", edgecolor="#333333", hatch="//", label="rank 0")]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.97), fontsize=8)
    fig.tight_layout()
    _save(fig, path, {"strategies": [r["strategy"] for r in rows], "kib_moved": moved,
                      "comm_ms": comm, "compute_ms": compute, "peak_kib": peak})


def _coincide(series, key) -> list[str]:
    """Notes for strategies whose `key` series are identical (lines drawn on top of each other)."""
    names, notes = list(series), []
    for i, a in enumerate(names):
        same = [b for b in names[i + 1:] if series[a][key] == series[b][key]]
        if same:
            notes.append(f"{a} = {', '.join(same)}")
    return notes


def projection(rows, path, title) -> None:
    """Predicted communication time per step, and rank 0's traffic, against the rank count."""
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(12, 4.4))
    series, strategies = {}, list(dict.fromkeys(r["strategy"] for r in rows))
    for i, strategy in enumerate(strategies):
        mine = [r for r in rows if r["strategy"] == strategy]
        wider = len(strategies) - 1 - i  # drawn first, drawn wider: a line on top leaves it visible
        look = dict(style(strategy), linewidth=1.5 + 1.5 * wider, markersize=6 + 3 * wider, alpha=0.9)
        sizes = [r["size"] for r in mine]
        series[strategy] = {"ranks": sizes, "seconds": [r["seconds"] for r in mine],
                            "rank0_bytes": [r["rank0_bytes"] for r in mine]}
        ax_t.plot(sizes, series[strategy]["seconds"], label=strategy, **look)
        ax_b.plot(sizes, series[strategy]["rank0_bytes"], label=strategy, **look)
    ax_t.set(xscale="log", yscale="log", xlabel="ranks (one per node)",
             ylabel="seconds per step (communication only)",
             title=f"predicted communication time per step\n(compute excluded); {title}")
    ax_b.set(xscale="log", yscale="log", xlabel="ranks (one per node)",
             ylabel="bytes per step (in + out of rank 0)", title="rank 0's traffic per step")
    for ax, key in ((ax_t, "seconds"), (ax_b, "rank0_bytes")):
        notes = _coincide(series, key)
        if notes:
            ax.text(0.02, 0.98, "identical: " + "; ".join(notes), transform=ax.transAxes,
                    va="top", fontsize=8, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    _save(fig, path, series)
