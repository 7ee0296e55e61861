"""Lab 10: DP is nearly obsolete next to DDP.

What it does (one process, no ranks needed): `stepcost` projects one training step of dp
and ddp (float32 dense models of `--params`, default 25 M and 125 M parameters; SGD with
momentum) to 1,024 ranks on every named fabric profile: the communication time per step
(plus `--compute-ms`, the same for both) and rank 0's bytes per step. For each model and
profile it finds the crossover N where dp's step time first reaches 2x and 10x DDP's: on
a grid of N from 2 to 1,024 (four points per doubling), refined by bisection on integers
inside the bracket (the ratio grows with N).

"Nearly obsolete" is read as: dp at least 2x slower from N <= 8 (one machine) and at least
10x slower from N <= 64, for every model size. The verdict names the profiles where that
is so. The projection is deterministic: --seeds does not change it.

    python labs/10_dp_vs_ddp_projection.py
    python labs/10_dp_vs_ddp_projection.py --params 1.3e9 --compute-ms 50
    python labs/10_dp_vs_ddp_projection.py --quick --out /tmp/lab10
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads


CLAIM = "DP is nearly obsolete next to DDP."
FACTORS = (2, 10)
WITHIN = {2: 8, 10: 64}  # "nearly obsolete": dp 2x slower by N=8, 10x by N=64
MAX_N = 1024


def parse_args(argv=None):
    p = common.lab_parser(__doc__)
    p.add_argument("--params", default="25e6,125e6", help="model sizes in parameters, comma-separated")
    p.add_argument("--profiles", default=",".join(sorted(common.PROFILES)), help="named profiles, comma-separated")
    p.add_argument("--compute-ms", type=float, default=0.0, help="compute per step, the same for both (ms)")
    args = common.parse(p, argv)
    args.params = [int(float(v)) for v in args.params.split(",") if v.strip()]
    args.profiles = [v.strip() for v in args.profiles.split(",") if v.strip()]
    unknown = sorted(set(args.profiles) - set(common.PROFILES))
    if unknown:
        p.error(f"unknown profile(s) {unknown}: choose from {sorted(common.PROFILES)}")
    if args.tiny:
        args.profiles = args.profiles[:2]
    return args


class Projection:
    """dp and ddp step costs of one model on one profile, cached by N."""

    def __init__(self, params: int, profile: str, compute_s: float):
        self.shape, self.profile, self.compute_s, self.cache = common.dense(params), profile, compute_s, {}

    def at(self, n: int) -> dict:
        if n not in self.cache:
            cost = {s: common.predict_step(s, n, self.shape, profile=self.profile, optimizer_slots=1)
                    for s in ("dp", "ddp")}
            self.cache[n] = {"size": n, **{f"{s}_s": c["seconds"] + self.compute_s for s, c in cost.items()},
                             **{f"{s}_rank0_bytes": c["rank0"]["bytes_sent"] + c["rank0"]["bytes_received"]
                                for s, c in cost.items()}}
            self.cache[n]["ratio"] = self.cache[n]["dp_s"] / self.cache[n]["ddp_s"]
        return self.cache[n]

    def crossover(self, factor: float) -> int | None:
        """The smallest N <= 1024 where dp's step time is >= factor x ddp's (None: never)."""
        grid = sorted({int(round(2 ** (k / 4))) for k in range(4, 41)})
        prev = 1
        for n in grid:
            if self.at(n)["ratio"] >= factor:
                lo, hi = prev, n  # ratio(lo) < factor <= ratio(hi)
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (lo, mid) if self.at(mid)["ratio"] >= factor else (mid, hi)
                return hi
            prev = n
        return None


def project(args) -> list[dict]:
    rows = []
    for params in args.params:
        for profile in args.profiles:
            proj = Projection(params, profile, args.compute_ms / 1e3)
            cross = {f: proj.crossover(f) for f in FACTORS}
            grid = [proj.at(n) for n in (2, 8, 64, MAX_N)]
            rows.append({"params": params, "profile": profile, **{f"cross_{f}x": cross[f] for f in FACTORS},
                         "curve": sorted(proj.cache.values(), key=lambda r: r["size"]), "table": grid,
                         "ratio_1024": proj.at(MAX_N)["ratio"],
                         "rank0_load_1024": proj.at(MAX_N)["dp_rank0_bytes"] / proj.at(MAX_N)["ddp_rank0_bytes"]})
    return rows


def conclude(rows) -> dict:
    checks = []
    for profile in dict.fromkeys(r["profile"] for r in rows):
        mine = [r for r in rows if r["profile"] == profile]
        ok = all(r[f"cross_{f}x"] is not None and r[f"cross_{f}x"] <= WITHIN[f] for r in mine for f in FACTORS)
        numbers = "; ".join(
            f"{r['params'] / 1e6:.0f}M: 2x at N={r['cross_2x'] or '>1024'}, 10x at N={r['cross_10x'] or '>1024'}, "
            f"{r['ratio_1024']:.0f}x at 1024 (rank-0 bytes {r['rank0_load_1024']:.0f}x)" for r in mine)
        checks.append(common.Check(f"dp >= 2x slower by N={WITHIN[2]} and >= 10x by N={WITHIN[10]}", ok, numbers,
                                   when=profile))
    return common.verdict(checks)


def draw(rows):
    from plots import lines

    def fig(figure):
        sizes = list(dict.fromkeys(r["params"] for r in rows))
        figure.set_size_inches(5 * len(sizes), 4)
        for i, params in enumerate(sizes):
            ax = figure.add_subplot(1, len(sizes), i + 1)
            lines(ax, {r["profile"]: ([c["size"] for c in r["curve"]], [c["ratio"] for c in r["curve"]])
                       for r in rows if r["params"] == params},
                  "ranks N", "dp step time / ddp step time", f"{params / 1e6:.0f}M parameters, float32",
                  logx=2, logy=True)
            for f in FACTORS:
                ax.axhline(f, color="gray", lw=0.8, ls=":")
    return fig


def main(argv=None):
    args = parse_args(argv)
    rows = project(args)
    result = conclude(rows)
    table = [dict(t, params=f"{r['params'] / 1e6:.0f}M", profile=r["profile"], dp_ms=1e3 * t["dp_s"],
                  ddp_ms=1e3 * t["ddp_s"], load=t["dp_rank0_bytes"] / t["ddp_rank0_bytes"])
             for r in rows for t in r["table"]]
    text = "\n".join([
        f"Lab 10: dp vs ddp projected (stepcost), SGD with momentum, compute {args.compute_ms} ms per step added to "
        "both; deterministic (seeds do not enter)", "",
        "Crossover N (dp's step time / ddp's reaches the factor)",
        common.format_table([dict(r, p=f"{r['params'] / 1e6:.0f}M") for r in rows], [
            ("p", "model", "{}"), ("profile", "profile", "{}"), ("cross_2x", "2x at N", "{}"),
            ("cross_10x", "10x at N", "{}"), ("ratio_1024", "ratio at 1024", "{:.1f}"),
            ("rank0_load_1024", "rank-0 bytes dp/ddp at 1024", "{:.0f}")]), "",
        "Step time and rank-0 load",
        common.format_table(table, [
            ("params", "model", "{}"), ("profile", "profile", "{}"), ("size", "N", "{}"), ("dp_ms", "dp ms", "{:.2f}"),
            ("ddp_ms", "ddp ms", "{:.2f}"), ("ratio", "dp/ddp", "{:.2f}"), ("load", "rank-0 bytes dp/ddp", "{:.1f}")])])
    common.finish(None, args, {"lab": "10_dp_vs_ddp_projection", "rows": rows, "verdict": result}, text,
                  {"10_dp_vs_ddp_projection.png": draw(rows)})


if __name__ == "__main__":
    main()
