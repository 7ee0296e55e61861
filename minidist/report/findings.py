""""What this run shows": three to five sentences computed from the run's own numbers.

Each finder looks at one question (equality, rank 0's load, the ring's balance, time,
the closed forms) and returns a sentence only when the run has the data to say it, with
the numbers in it; nothing here is fixed text about what a run should show.
"""
from __future__ import annotations

from .summary import human_bytes


def _moved(k) -> float:
    return k["bytes_sent"] + k["bytes_received"]


def equality(ctx) -> str | None:
    others = [r for r in ctx.rows if r["strategy"] != "local"]
    if not others:
        return None
    steps, size = ctx.header["config"].get("steps"), ctx.header["world_size"]
    same = [r for r in others if r["max_param_diff"] <= ctx.tolerance]
    worst = max(r["max_param_diff"] for r in same) if same else None
    if len(same) == len(others):
        return (f"All {len(others)} distributed strategies equal the local reference to {worst:.1e} "
                f"(largest parameter difference over {steps} steps and {size} ranks; round-off bound "
                f"{ctx.tolerance:.0e}).")
    differ = "; ".join(f"{r['strategy']} differs from it by {r['max_param_diff']:.1e}"
                       for r in others if r not in same)
    agree = f"{', '.join(r['strategy'] for r in same)} equal the reference to {worst:.1e}; " if same else ""
    return f"{agree}{differ} (round-off bound {ctx.tolerance:.0e})."


def root_load(ctx) -> str | None:
    ratios = {}
    for r in ctx.rows:
        ranks = r["ranks"]
        if r["strategy"] != "local" and len(ranks) > 1 and max(_moved(k) for k in ranks[1:]) > 0:
            ratios[r["strategy"]] = _moved(ranks[0]) / max(_moved(k) for k in ranks[1:])
    if not ratios:
        return None
    top = max(ratios, key=ratios.get)  # the first, in the run's order, of the largest
    alike = [s for s in ratios if s != top and abs(ratios[s] - ratios[top]) < 1e-9 * ratios[top]]
    rank0 = next(r for r in ctx.rows if r["strategy"] == top)["ranks"][0]
    also = f" (and {', '.join(alike)})" if alike else ""
    return (f"Rank 0 moved {ratios[top]:.1f}x the bytes of any other rank under {top}{also} "
            f"({human_bytes(_moved(rank0))} per step in + out), the largest imbalance in this run.")


def ring_balance(ctx) -> str | None:
    for r in ctx.rows:
        if r["strategy"] == "ddp" and len(r["ranks"]) > 1:
            moved = [_moved(k) for k in r["ranks"]]
            if min(moved) > 0:
                return (f"Under ddp every rank moved between {human_bytes(min(moved))} and "
                        f"{human_bytes(max(moved))} per step (max/min {max(moved) / min(moved):.2f}): "
                        f"the ring spreads the traffic.")
    return None


def time_split(ctx) -> str | None:
    timed = [r for r in ctx.rows if r["strategy"] != "local"]
    if not timed:
        return None
    mean = lambda r, key: sum(k[key] for k in r["ranks"]) / len(r["ranks"])  # noqa: E731
    fastest = min(timed, key=lambda r: mean(r, "comm_ms") + mean(r, "compute_ms"))
    comm, total = mean(fastest, "comm_ms"), mean(fastest, "comm_ms") + mean(fastest, "compute_ms")
    env = ctx.header.get("environment", {})
    crowded = (f" on {env['cores']} cores, so timings include waiting for a core"
               if env.get("cores") and env["cores"] < ctx.header["world_size"] else "")
    share = f"{100 * comm / total:.0f}%" if total > 0 else "n/a"
    return (f"The quickest step was {fastest['strategy']}'s: {total:.2f} ms per step (mean over ranks "
            f"of the medians), {share} of it communication{crowded}.")


def closed_forms(ctx) -> str | None:
    checks = ctx.extra.get("checks") or []
    if not checks:
        return None
    wrong = [f"{c['strategy']} rank {c['rank']}" for c in checks
             if c["predicted_bytes"] != c["measured_bytes"] or c["predicted_messages"] != c["measured_messages"]]
    if wrong:
        return f"The ledger differs from the closed-form counts for {', '.join(wrong)}."
    return (f"The ledger's bytes and messages equal the closed-form predictions in all {len(checks)} "
            f"(strategy, rank) pairs checked.")


def one_rank(ctx) -> str | None:
    if ctx.header["world_size"] == 1:
        return ("This run had one rank: nothing was communicated, so equality is trivial; "
                "rerun with `minidist compare -n 4`.")
    return None


FINDERS = [one_rank, equality, root_load, ring_balance, closed_forms, time_split]


def findings(ctx, limit: int = 5) -> list[str]:
    """The sentences that this run's numbers support, at most `limit`."""
    said = [s for s in (finder(ctx) for finder in FINDERS) if s]
    return said[:limit]
