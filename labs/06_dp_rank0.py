"""Lab 6: DP gathers gradients to rank 0, which becomes the bottleneck and holds more memory.

What it does. For each N from 2 to the mpiexec -n, the first N ranks form a communicator
and train the same float32 MLP for a few steps under dp, hub and ddp, K seeds each. Rank
0's and the busiest other rank's bytes per step (ledger) and peak memory (the library's
memory report) are measured; beside them `stepcost` predicts the same numbers, and
extends them, with the modelled step time on a named fabric, to `--project` ranks.

The verdict rests on the trend over N: rank 0 is "the bottleneck" at N when it moves more
than 1.5x the bytes of any other rank and holds more memory. The lab finds the smallest N
from which that is true at every larger N (measured and predicted), and says the claim
holds only from there (at N = 2 rank 0 and rank 1 move the same bytes).

    mpiexec -n 4 python labs/06_dp_rank0.py
    mpiexec -n 4 python labs/06_dp_rank0.py --profile 100gbe --project-params 25e6
    mpiexec -n 3 python labs/06_dp_rank0.py --quick --out /tmp/lab6
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import sys

import measure
from minidist.data import spirals
from minidist.parallel import MLP

CLAIM = "DP gathers gradients to rank 0, which becomes the bottleneck and holds more memory."
STRATEGIES = ("dp", "hub", "ddp")
BOTTLENECK = 1.5  # rank 0 moves more than 1.5x the bytes of any other rank


def parse_args(argv=None):
    p = common.lab_parser(__doc__)
    p.add_argument("--sizes", type=common.int_list, default=None,
                   help="rank counts to measure, each in [2, the mpiexec -n] (default: 2, 3, ..., n)")
    return measure.parse_options(p, argv, [2, 3, 4, 8, 16, 64, 256, 1024])


def measured_rows(args, world) -> list[dict]:
    rows = []
    sizes = args.sizes or range(2, world.size + 1)
    if min(sizes) < 2 or max(sizes) > world.size:  # every rank stops; rank 0 says why
        if world.rank == 0:
            print(f"--sizes must lie in [2, {world.size}] (got {list(sizes)})", file=sys.stderr)
        raise SystemExit(2)
    for n, comm in common.sub_communicators(world, sizes):
        for strategy in STRATEGIES:
            per_seed = measure.seeds_loop(
                args, comm, strategy, lambda seed: MLP(2, args.hidden, 3, rng=seed),
                lambda seed: spirals(64, 3, seed=seed), batch=args.batch, steps=args.steps)
            if comm.rank == 0:
                row = measure.summary(per_seed, n, strategy)
                cost = measure.predicted(common.predict_step(strategy, n, common.describe(MLP(2, args.hidden, 3))))
                row.update({f"predicted_{k}": cost[k] for k in ("rank0_bytes", "other_bytes", "rank0_peak")})
                rows.append(row)
    return rows


def projected_rows(args, shape) -> list[dict]:
    rows = []
    for n in args.project:
        for strategy in STRATEGIES:
            cost = common.predict_step(strategy, n, shape, profile=args.profile, optimizer_slots=1)
            rows.append({"size": n, "strategy": strategy, **measure.predicted(cost)})
    return rows


def bottleneck(row) -> bool:
    return row["rank0_bytes"] > BOTTLENECK * row["other_bytes"] and row["rank0_peak"] > row["other_peak"]


def conclude(measured, projected) -> dict:
    dp_m = {r["size"]: r for r in measured if r["strategy"] == "dp"}
    dp_p = {r["size"]: r for r in projected if r["strategy"] == "dp"}
    sizes = sorted(set(dp_m) | set(dp_p))
    at = {n: dp_m.get(n) or dp_p[n] for n in sizes}  # measured where measured, else predicted
    is_bottleneck = {n: bottleneck(at[n]) for n in sizes}
    start = next((n for n in sizes if all(is_bottleneck[m] for m in sizes if m >= n)), None)
    ratio = {n: at[n]["rank0_bytes"] / max(at[n]["other_bytes"], 1) for n in sizes}
    fmt = lambda ns: ", ".join(f"N={n}: {ratio[n]:.2f}x" for n in ns)  # noqa: E731
    off = [f"{r['strategy']} N={r['size']}: rank 0 {r['rank0_bytes']:.0f} vs {r['predicted_rank0_bytes']}, "
           f"rank 1 {r['rank1_bytes']:.0f} vs {r['predicted_other_bytes']}" for r in measured
           if r["rank0_bytes"] != r["predicted_rank0_bytes"] or r["rank1_bytes"] != r["predicted_other_bytes"]]
    checks = [common.Check("the ledger's bytes equal stepcost's prediction (ranks 0 and 1, every N measured)",
                           not off, "; ".join(off) or f"all {len(measured)} measured rows equal")]
    grows = [ratio[n] for n in sizes]
    measured_note = "" if len(dp_m) > 1 else " (only N=2 measured here: the trend is stepcost's)"
    checks.append(common.Check("dp's rank-0 / other bytes ratio grows with N (measured, then predicted)",
                               all(b > a for a, b in zip(grows, grows[1:])), fmt(sizes) + measured_note))
    if start is not None:
        checks.append(common.Check("rank 0 moves > 1.5x any other rank's bytes and holds more memory", True,
                                   fmt([n for n in sizes if n >= start]), when=f"N >= {start}"))
    below = [n for n in sizes if start is None or n < start]
    if below:
        checks.append(common.Check("rank 0 moves > 1.5x any other rank's bytes and holds more memory", False,
                                   fmt(below), when=f"N < {start}" if start else "any N"))
    return common.verdict(checks)


def draw(measured, projected, profile):
    from plots import lines

    def fig(figure):
        figure.set_size_inches(12, 4)
        ax = figure.add_subplot(1, 3, 1)
        series = {}
        for s in STRATEGIES:
            p = [r for r in projected if r["strategy"] == s]
            series[f"{s} rank 0"] = ([r["size"] for r in p], [r["rank0_bytes"] / 2**20 for r in p])
            if s == "dp":
                series["dp other rank"] = ([r["size"] for r in p], [r["other_bytes"] / 2**20 for r in p])
        lines(ax, series, "ranks N", "MiB per step (sent + received)", "traffic, predicted", logx=2, logy=True,
              linestyles={"dp other rank": "--"})
        ax = figure.add_subplot(1, 3, 2)
        lines(ax, {s: ([r["size"] for r in projected if r["strategy"] == s],
                       [1e3 * r["seconds"] for r in projected if r["strategy"] == s]) for s in STRATEGIES},
              "ranks N", f"modelled ms per step ({profile})", "communication time", logx=2, logy=True)
        ax = figure.add_subplot(1, 3, 3)
        m = [r for r in measured if r["strategy"] == "dp"]
        lines(ax, {"dp rank 0": ([r["size"] for r in m], [r["rank0_peak"] / 2**10 for r in m]),
                   "dp other rank": ([r["size"] for r in m], [r["other_peak"] / 2**10 for r in m]),
                   "ddp rank 0": ([r["size"] for r in measured if r["strategy"] == "ddp"],
                                  [r["rank0_peak"] / 2**10 for r in measured if r["strategy"] == "ddp"])},
              "ranks N (measured)", "peak memory (KiB, memory report)", "memory, measured",
              linestyles={"dp other rank": "--"})
    return fig


def main(argv=None):
    args = parse_args(argv)
    world, measured, projected = measure.measure_and_project(args, "06_dp_rank0.py", measured_rows, projected_rows,
                                                             MLP(2, args.hidden, 3))
    if world.rank != 0:
        return
    result = conclude(measured, projected)
    kib = "{:.1f}"
    table_m = [dict(r, ms_pm=f"{r['ms_mean']:.1f} ± {r['ms_spread']:.1f}", ratio=r["rank0_bytes"] / r["other_bytes"],
                    **{k: r[k] / 1024 for k in ("rank0_peak", "other_peak", "predicted_rank0_peak")}) for r in measured]
    text = "\n".join([
        f"Lab 6: rank 0 under dp, MLP(2-{args.hidden}-{args.hidden}-3) float32 "
        f"({common.describe(MLP(2, args.hidden, 3)).param_bytes} parameter bytes), {args.batch} samples per rank, "
        f"SGD momentum, per step over {args.steps} steps, {len(args.seed_list)} seeds (bytes are the same for every "
        "seed; ms/step mean ± spread, loaded machine)", "",
        "Measured (ledger, memory report) beside stepcost's prediction; bytes = sent + received per step",
        common.format_table(table_m, [
            ("size", "N", "{}"), ("strategy", "strategy", "{}"), ("rank0_bytes", "rank-0 B", "{:.0f}"),
            ("predicted_rank0_bytes", "pred", "{}"), ("other_bytes", "other B (max)", "{:.0f}"),
            ("ratio", "rank0/other", "{:.2f}"), ("rank0_peak", "rank-0 peak KiB", kib),
            ("predicted_rank0_peak", "pred", kib), ("other_peak", "other peak KiB", kib), ("ms_pm", "ms/step", "{}")]),
        "", f"Predicted (stepcost, {args.profile}) for "
        f"{measure.projection_shape(args, MLP(2, args.hidden, 3)).param_bytes / 2**20:.1f} MiB of parameters",
        common.format_table([dict(r, ms=1e3 * r["seconds"], r0=r["rank0_bytes"] / 2**20, ot=r["other_bytes"] / 2**20,
                                  p0=r["rank0_peak"] / 2**20, po=r["other_peak"] / 2**20) for r in projected], [
            ("size", "N", "{}"), ("strategy", "strategy", "{}"), ("r0", "rank-0 MiB", "{:.2f}"),
            ("ot", "other MiB", "{:.2f}"), ("p0", "rank-0 peak MiB", "{:.2f}"), ("po", "other peak MiB", "{:.2f}"),
            ("ms", "modelled ms", "{:.3f}")])])
    common.finish(world, args, {"lab": "06_dp_rank0", "world_size": world.size, "measured": measured,
                                "projected": projected, "verdict": result}, text,
                  {"06_dp_rank0.png": draw(measured, projected, args.profile)})


if __name__ == "__main__":
    main()
