"""Lab 3: BatchNorm must come before the activation, otherwise it is useless.

What it does (one process, float64, spirals with 3 classes): the same MLP (`models.NormMLP`,
`--depth` hidden blocks) with Linear -> BN -> act ("before"), Linear -> act -> BN ("after")
and Linear -> act ("none"), for sigmoid and ReLU, trained from the same initial Linear
weights on the same batches for the same sample budget, over K seeds. It reports the
training loss at the end (the mean over the last twentieth of the run) and the held-out
accuracy.

The claim predicts, per activation: "before" beats "none" (on every seed, by more than the
spread), and "after" does not (BN after the activation is useless). Where "after" helps as
much as or more than "before", the claim does not hold for that activation.

    python labs/03_bn_placement.py
    python labs/03_bn_placement.py --depth 8 --lr 0.05
    python labs/03_bn_placement.py --quick --out /tmp/lab3
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import numpy as np

from models import PLACEMENTS, NormMLP

CLAIM = "BatchNorm must come before the activation, otherwise it is useless."
ACTS = ("sigmoid", "relu")


def parse_args(argv=None):
    return common.training_args(__doc__, argv, depth=4, budget=12800, tiny_depth=2)


def measure(args) -> list[dict]:
    rows = []
    for act in ACTS:
        for placement in PLACEMENTS:
            runs = []
            for seed in args.seed_list:
                data, test = common.spiral_data(seed)
                net = NormMLP(2, args.hidden, 3, args.depth, act=act, placement=placement, rng=seed)
                runs.append(common.train_local(net, data, test, batch=args.batch, budget=args.budget,
                                               lr=args.lr, seed=seed))
            rows.append({"act": act, "placement": placement, "loss": [r["final_loss"] for r in runs],
                         "accuracy": [r["accuracy"] for r in runs], "samples": runs[0]["samples"],
                         "curve": np.mean([r["curve"] for r in runs], axis=0).tolist()})
    return rows


def better(a, b) -> tuple[bool, float, float]:
    """Is loss `a` below loss `b` on every seed by more than the spread? (ok, mean gain, spread)."""
    gain = np.array(b) - np.array(a)
    m, s = common.mean_spread(gain)
    return bool(np.all(gain > 0) and m > s), m, s


def conclude(rows) -> dict:
    by = {(r["act"], r["placement"]): r for r in rows}
    checks = []
    for act in ACTS:
        none, before, after = (by[act, p]["loss"] for p in ("none", "before", "after"))
        acc = {p: common.pm(by[act, p]["accuracy"]) for p in ("none", "before", "after")}
        ok_before, gb, sb = better(before, none)
        ok_after, ga, sa = better(after, none)
        checks.append(common.Check(
            "BN before the activation helps, BN after it does not", ok_before and not ok_after,
            f"final loss none {common.pm(none)}, before {common.pm(before)}, after {common.pm(after)}; "
            f"gain over none: before {gb:+.3f} ± {sb:.3f}, after {ga:+.3f} ± {sa:.3f} (held-out accuracy "
            f"none {acc['none']}, before {acc['before']}, after {acc['after']})", when=act))
    return common.verdict(checks)


def draw(rows):
    from plots import lines

    def fig(figure):
        figure.set_size_inches(9, 4)
        for i, act in enumerate(ACTS):
            ax = figure.add_subplot(1, 2, i + 1)
            series = {r["placement"]: (r["samples"], r["curve"]) for r in rows if r["act"] == act}
            lines(ax, series, "samples seen", "training loss (nats, mean over seeds)", act, logy=True)
    return fig


def main(argv=None):
    args = parse_args(argv)
    rows = measure(args)
    result = conclude(rows)
    table = [dict(r, loss_pm=common.pm(r["loss"]), acc_pm=common.pm(r["accuracy"])) for r in rows]
    text = "\n".join([
        f"Lab 3: BatchNorm placement, MLP depth {args.depth} x {args.hidden}, batch {args.batch}, "
        f"{args.budget} samples per run, SGD lr {args.lr} momentum 0.9, mean ± spread over "
        f"{len(args.seed_list)} seeds", "",
        common.format_table(table, [("act", "activation", "{}"), ("placement", "BN", "{}"),
                                    ("loss_pm", "final training loss", "{}"),
                                    ("acc_pm", "held-out accuracy", "{}")])])
    common.finish(None, args, {"lab": "03_bn_placement", "rows": rows, "verdict": result}, text,
                  {"03_bn_placement.png": draw(rows)})


if __name__ == "__main__":
    main()
