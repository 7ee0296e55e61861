"""Plain-text summaries for a terminal: the comparison table and one rank-by-rank summary.

Both are printed once, by rank 0, from the same reductions as the report
(`summary.strategy_rows`), so the terminal and report.md never disagree.

    print_summary(comm, loss)   # every rank calls it; rank 0 prints each rank's loss and,
                                # per phase, bytes, messages and milliseconds
"""
from __future__ import annotations

from statistics import median

from .summary import human_bytes, strategy_rows


def format_table(head, rows) -> str:
    """Right-aligned columns under a header and a rule."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def comparison_table(records, strategies, size: int) -> str:
    """Per strategy: final global loss, worst parameter difference, rank 0 against the
    busiest other rank (bytes sent, messages), medians of comm and compute ms, peak memory."""
    header = {"world_size": size, "strategies": list(strategies)}
    rows = []
    for r in strategy_rows(header, records):
        ranks = r["ranks"]
        others = ranks[1:] or [dict.fromkeys(ranks[0], 0)]
        rows.append([r["strategy"], "n/a" if r["final_loss"] is None else f"{r['final_loss']:.6f}",
                     f"{r['max_param_diff']:.1e}", human_bytes(ranks[0]["bytes_sent"]),
                     human_bytes(max(k["bytes_sent"] for k in others)),
                     f"{ranks[0]['messages_sent']:.0f}",
                     f"{sum(k['comm_ms'] for k in ranks) / size:.2f}", f"{_wait_ms(records, r['strategy']):.2f}",
                     f"{sum(k['compute_ms'] for k in ranks) / size:.2f}",
                     human_bytes(ranks[0]["peak_bytes"]), human_bytes(max(k["peak_bytes"] for k in others))])
    head = ["strategy", "final loss", "max|dp|", "sent/step r0", "sent/step max(r>0)",
            "msgs/step r0", "comm ms", "of it wait", "compute ms", "peak mem r0", "peak mem max(r>0)"]
    return format_table(head, rows)


def _wait_ms(records, strategy) -> float:
    """Mean over ranks of the median milliseconds per step spent waiting for the last rank
    to enter a collective call (docs/timing.md)."""
    by_rank: dict = {}
    for r in records:
        if r["strategy"] == strategy:
            by_rank.setdefault(r["rank"], []).append(r.get("wait_seconds", 0.0))
    return 1e3 * sum(median(v) for v in by_rank.values()) / max(len(by_rank), 1)


def rank_summary(per_rank) -> str:
    """Text of `per_rank`: a list, in rank order, of ``{"loss": float | None, "phases":
    ledger.by_phase()}``; one line per rank and phase."""
    rows = []
    for rank, info in enumerate(per_rank):
        loss = "n/a" if info.get("loss") is None else f"{info['loss']:.4f}"
        phases = info["phases"] or {"(no communication)": None}
        for name, ph in phases.items():
            if ph is None:
                rows.append([rank, loss, name, "0 B", "0 B", "0/0", "0.00"])
                continue
            rows.append([rank, loss, name, human_bytes(ph["bytes_sent"]), human_bytes(ph["bytes_received"]),
                         f"{ph['messages_sent']}/{ph['messages_received']}", f"{1e3 * ph['seconds']:.2f}"])
            loss = ""  # once per rank
    return format_table(["rank", "last loss", "phase", "sent", "received", "msgs out/in", "ms"], rows)


def print_summary(comm, loss=None) -> None:
    """Called on every rank at the end of a job: rank 0 prints one table of every rank's
    last loss and its ledger per phase (totals since the last ``ledger.reset()``)."""
    value = None if loss is None else float(getattr(loss, "item", lambda: loss)())
    mine = {"loss": value, "phases": comm.ledger.by_phase()}
    # reporting only: one pickled gather after the work is done
    everything = comm.mpi.gather(mine, root=0) if comm.size > 1 else [mine]
    if comm.rank == 0:
        print(f"{comm.size} rank(s): last loss and what each rank's ledger recorded, per phase")
        print(rank_summary(everything), flush=True)
