"""PNG plots of a compare.py run (matplotlib, no screen needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import atomic_open  # noqa: E402
from .summary import global_losses  # noqa: E402
from .timing import write_series  # noqa: E402


def _save(fig, path) -> None:
    """Write `fig` as a PNG at `path` atomically (a killed run leaves the old plot), then close it."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)


def _worst_diff(steps, name):
    """(steps, max over ranks of max |parameter - reference|)."""
    worst = {}
    for r in steps:
        if r["strategy"] == name:
            worst[r["step"]] = max(worst.get(r["step"], 0.0), r["max_param_diff"])
    xs = sorted(worst)
    return xs, [worst[x] for x in xs]


def training(header, steps, path) -> None:
    """Loss over the global batch per step and the largest parameter difference from the
    local reference, per strategy."""
    fig, (ax_loss, ax_diff) = plt.subplots(1, 2, figsize=(11, 4))
    series = {}
    for name in header["strategies"]:
        x, loss = global_losses(steps, name)
        ax_loss.plot(x, loss, label=name, marker=".", linestyle="-" if name == "local" else "--")
        x, diff = _worst_diff(steps, name)
        series[name] = {"steps": x, "loss": loss, "max_param_diff": diff}
        if name != "local":
            ax_diff.plot(x, [max(d, 1e-18) for d in diff], label=name, marker=".")
    ax_loss.set(title="training loss on the global batch", xlabel="step", ylabel="loss")
    ax_diff.set(title="max |parameter - local reference|", xlabel="step", yscale="log")
    ax_diff.axhline(1e-10, color="grey", linestyle=":", linewidth=1)
    for ax in (ax_loss, ax_diff):
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    write_series(path, series)


def per_rank(rows, path) -> None:
    """Bytes moved, communication vs compute time, and peak memory, per strategy and rank."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    names = [r["strategy"] for r in rows]
    size = len(rows[0]["ranks"])
    width = 0.8 / size
    for rank in range(size):
        xs = [i + (rank - (size - 1) / 2) * width for i in range(len(rows))]
        moved = [(r["ranks"][rank]["bytes_sent"] + r["ranks"][rank]["bytes_received"]) / 1024 for r in rows]
        comm = [r["ranks"][rank]["comm_ms"] for r in rows]
        compute = [r["ranks"][rank]["compute_ms"] for r in rows]
        peak = [r["ranks"][rank]["peak_bytes"] / 1024 for r in rows]
        axes[0].bar(xs, moved, width, label=f"rank {rank}")
        axes[1].bar(xs, compute, width, color=f"C{rank}", alpha=0.45)
        axes[1].bar(xs, comm, width, bottom=compute, color=f"C{rank}", label=f"rank {rank}")
        axes[2].bar(xs, peak, width, label=f"rank {rank}")
    titles = ("KiB sent + received per step", "ms per step: compute (light) + communication",
              "peak memory, KiB (params, grads, optimizer, buffers)")
    for ax, title in zip(axes, titles):
        ax.set_xticks(range(len(rows)), names, rotation=20)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    write_series(path, {"bars": [{"strategy": r["strategy"], **{k: k_rank[k] for k in (
        "rank", "bytes_sent", "bytes_received", "comm_ms", "compute_ms", "peak_bytes")}}
        for r in rows for k_rank in r["ranks"]]})


def projection(rows, path, title) -> None:
    """Predicted communication seconds per step against the number of ranks (log-log)."""
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(11, 4))
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == strategy]
        ax_t.plot([r["size"] for r in mine], [r["seconds"] for r in mine], marker="o", label=strategy)
        ax_b.plot([r["size"] for r in mine], [r["rank0_bytes"] for r in mine], marker="o", label=strategy)
    ax_t.set(xscale="log", yscale="log", xlabel="ranks", ylabel="seconds per step", title=title)
    ax_b.set(xscale="log", yscale="log", xlabel="ranks", ylabel="bytes in + out of rank 0 per step",
             title="rank 0's traffic")
    write_series(path, {"lines": [{k: r[k] for k in ("strategy", "size", "seconds", "rank0_bytes")}
                                  for r in rows]})
    for ax in (ax_t, ax_b):
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
