"""bench_collectives.py's table rows, summaries and files: the targets met or missed, the
CSV, and the mean of the calibrations before and after the sweep."""
from __future__ import annotations

import csv

SHORT = {"recursive_doubling": "rd", "ring": "ring", "rabenseifner": "rab"}
TARGETS = [  # (label, column, comparison, bound, smallest size it applies to, only that size)
    ("ring/mpi <= 1.0 at >= 4 MiB", "ring/mpi", "<=", 1.0, 4 << 20, False),
    ("auto/mpi <= 1.2 at 4 KiB", "auto/mpi", "<=", 1.2, 4 << 10, True),
    ("auto/mpi <= 1.0 at >= 256 KiB", "auto/mpi", "<=", 1.0, 256 << 10, False),
    ("ring/floor <= 1.15 at >= 1 MiB", "ring/floor", "<=", 1.15, 1 << 20, False),
    ("ledger <= 1.05 at >= 1 MiB", "ledger", "<=", 1.05, 1 << 20, False),
    ("ring/gloo <= 0.5 at >= 4 KiB", "ring/gloo", "<=", 0.5, 4 << 10, False),
    ("ring/model in 0.8..1.25 at >= 64 KiB", "ring/model (mean)", "in", (0.8, 1.25), 64 << 10,
     False),
]


def mean_profile(first, second):
    """The average of the calibrations before and after the sweep: on a shared machine the
    load drifts while the sweep runs, and either end alone can be off by tens of percent."""
    node = None if first.node_bw is None or second.node_bw is None else \
        (first.node_bw + second.node_bw) / 2
    rendezvous = None if first.rendezvous_alpha is None or second.rendezvous_alpha is None \
        else (first.rendezvous_alpha + second.rendezvous_alpha) / 2
    return first.with_(name="calibrated-mean", alpha=(first.alpha + second.alpha) / 2,
                       eager_max=first.eager_max if rendezvous is not None else None,
                       rendezvous_alpha=rendezvous,
                       beta=(first.beta + second.beta) / 2, gamma=(first.gamma + second.gamma) / 2,
                       node_bw=node, source=f"mean of two calibrations | {first.source}")


def drift(first, second):
    """How much each parameter moved between the two calibrations, in percent."""
    keys = ["alpha", "beta", "gamma"] + (["node_bw"] if first.node_bw and second.node_bw else [])
    return {k: 100 * (getattr(second, k) / getattr(first, k) - 1) for k in keys}


def summarize(rows):
    lines = []
    for label, column, how, bound, smallest, only in TARGETS:
        column = column if column in rows[0] else column.split(" (")[0]  # no recalibration
        picked = [r for r in rows if (r["bytes"] == smallest if only else r["bytes"] >= smallest)]
        if not picked:
            lines.append(f"  {label}: no size in range")
            continue
        if column not in picked[0]:  # e.g. ring/gloo without torch
            continue
        values = [r[column] for r in picked]
        ok = [(bound[0] <= v <= bound[1]) if how == "in" else v <= bound for v in values]
        shown = ", ".join(f"{r['bytes'] >> 10}K:{v:.2f}{'' if good else '!'}"
                          for r, v, good in zip(picked, values, ok))
        lines.append(f"  {'MET ' if all(ok) else 'MISS'} {label}: {shown}")
        if column == "ring/floor":
            bound = ", ".join(f"{r['bytes'] >> 10}K:{r['model ring/floor']:.2f}" for r in picked)
            lines.append(f"       the calibrated model's ring/floor (adds not overlapped): {bound}")
    return "\n".join(lines)


def write_csv(path, rows, methods):
    fields = ["bytes", "count", "auto_algorithm"]
    for name in methods:
        fields += [f"{name}_avg_us", f"{name}_min_us", f"{name}_max_us", f"{name}_iters"]
    fields += ["algbw_ring", "busbw_ring", "algbw_mpi", "busbw_mpi", "ring/mpi", "auto/mpi",
               "ring/floor", "py_us", "ledger", "ring/model", "model ring/floor"]
    fields += ["ring/gloo"] if "ring/gloo" in rows[0] else []
    fields += ["ring/model (mean)"] if "ring/model (mean)" in rows[0] else []
    fields += [f"predicted_{name}_us" for name in rows[0]["predicted"]]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            out = {k: r[k] for k in fields if k in r}
            for name in methods:
                out.update({f"{name}_avg_us": r[name][0] * 1e6, f"{name}_min_us": r[name][1] * 1e6,
                            f"{name}_max_us": r[name][2] * 1e6, f"{name}_iters": r["iters"][name]})
            out.update({f"predicted_{k}_us": v * 1e6 for k, v in r["predicted"].items()})
            w.writerow(out)


HEADER = (f"{'bytes':>9} {'ring':>9} {'rd':>9} {'rab':>9} {'auto':>11} {'mpi':>9} {'g+b':>9} "
          f"{'floor':>9} {'busbw':>6} {'mpi bw':>6} {'ring/mpi':>8} {'auto/mpi':>8} "
          f"{'ring/flr':>8} {'ledger':>6} {'model':>9} {'r/model':>7} {'py':>6} {'gloo':>9} {'r/gloo':>6}")


def format_row(r):
    us = lambda name: f"{r[name][0] * 1e6:9.1f}"  # noqa: E731
    auto = f"{r['auto'][0] * 1e6:8.1f}:{SHORT[r['auto_algorithm']]:<2}"[:11]
    return (f"{r['bytes']:>9} {us('ring')} {us('rd')} {us('rab')} {auto:>11} {us('mpi')} "
            f"{us('g+b')} {us('floor')} {r['busbw_ring']:6.2f} {r['busbw_mpi']:6.2f} "
            f"{r['ring/mpi']:8.2f} {r['auto/mpi']:8.2f} {r['ring/floor']:8.2f} {r['ledger']:6.3f} "
            f"{r['predicted']['ring'] * 1e6:9.1f} {r['ring/model']:7.2f} {r['py_us']:6.1f} "
            + (f"{us('gloo')} {r['ring/gloo']:6.2f}" if "gloo" in r else f"{'-':>9} {'-':>6}"))
