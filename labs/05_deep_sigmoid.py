"""Lab 5: BatchNorm speeds up a deep sigmoid network (vanishing gradients); with ReLU the
gain is doubtful.

What it does (one process, float64, spirals with 3 classes, K seeds): MLPs of depth >= 8
(`models.NormMLP`, BN before the activation) in four cases, sigmoid and ReLU, with and
without BN, from the same initial Linear weights, on the same batches and the same sample
budget. It draws the convergence curves and, at initialisation, the gradient norm of each
Linear layer's weight on one batch.

Speed-up: the budget (what the net without BN spends to reach its final loss) divided by
the samples the net with BN needs to reach that same loss (> 1: BN is faster; 0 when it
never gets there; at most 40x, the curve's resolution). The claim predicts a large speed-up for sigmoid (>= 2 on every
seed) and a doubtful one for ReLU (< 2 on some seed, or a final-loss gain within the
spread over seeds).

    python labs/05_deep_sigmoid.py
    python labs/05_deep_sigmoid.py --depth 12 --budget 40000
    python labs/05_deep_sigmoid.py --quick --out /tmp/lab5
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import numpy as np

from minidist import Tensor
from minidist.nn import functional as F
from models import NormMLP, hidden_linears

CLAIM = "BatchNorm speeds up a deep sigmoid network (vanishing gradients); with ReLU the gain is doubtful."
CASES = (("sigmoid", "none"), ("sigmoid", "before"), ("relu", "none"), ("relu", "before"))
LARGE = 2.0  # a speed-up of 2x or more is "large"
POINTS = 40  # stretches of the loss curve: speed-ups are resolved up to 40x


def parse_args(argv=None):
    return common.training_args(__doc__, argv, depth=8, budget=19200, tiny_depth=None)


def label(act, placement) -> str:
    return f"{act} {'+ BN' if placement == 'before' else 'no BN'}"


def init_gradients(args, act, placement, seed) -> list[float]:
    """|dL/dW| (Frobenius) of every Linear, first to last, on one batch at initialisation."""
    net = NormMLP(2, args.hidden, 3, args.depth, act=act, placement=placement, rng=seed)
    (X, y), _ = common.spiral_data(seed)
    F.cross_entropy(net(Tensor(X[:args.batch * 4])), y[:args.batch * 4]).backward()
    return [float(np.linalg.norm(layer.weight.grad)) for layer in hidden_linears(net)]


def measure(args) -> list[dict]:
    rows = []
    for act, placement in CASES:
        runs, grads = [], []
        for seed in args.seed_list:
            data, test = common.spiral_data(seed)
            net = NormMLP(2, args.hidden, 3, args.depth, act=act, placement=placement, rng=seed)
            runs.append(common.train_local(net, data, test, batch=args.batch, budget=args.budget,
                                           lr=args.lr, seed=seed, points=POINTS))
            grads.append(init_gradients(args, act, placement, seed))
        rows.append({"case": label(act, placement), "act": act, "placement": placement,
                     "curves": [r["curve"] for r in runs], "samples": runs[0]["samples"],
                     "final": [r["final_loss"] for r in runs], "accuracy": [r["accuracy"] for r in runs],
                     "grad_norms": np.mean(grads, axis=0).tolist(),
                     "first_over_last": [g[0] / g[-2] for g in grads]})
    return rows


def samples_to(curve, samples, target) -> float:
    """Samples seen when `curve` first reaches `target` (inf if never)."""
    hit = np.nonzero(np.array(curve) <= target)[0]
    return float(samples[hit[0]]) if hit.size else float("inf")


def speedups(plain, with_bn) -> list[float]:
    """Per seed: the budget (what the net without BN spent to reach its final loss) over
    the samples the net with BN needs to reach that loss (0 if it never does; at most the
    curve's resolution, POINTS x)."""
    budget = plain["samples"][-1]
    return [budget / samples_to(c1, plain["samples"], c0[-1]) for c0, c1 in zip(plain["curves"], with_bn["curves"])]


def conclude(rows) -> dict:
    by = {(r["act"], r["placement"]): r for r in rows}
    checks = []
    for act in ("sigmoid", "relu"):
        plain, bn = by[act, "none"], by[act, "before"]
        speed = speedups(plain, bn)
        gain = np.array(plain["final"]) - np.array(bn["final"])
        m, s = common.mean_spread(gain)
        shown = ", ".join(f"{v:.1f}x" if v < POINTS else f">={POINTS}x (first stretch)" for v in speed)
        numbers = (f"speed-up per seed {shown}; final loss no BN "
                   f"{common.pm(plain['final'])}, BN {common.pm(bn['final'])}")
        large = all(v >= LARGE for v in speed) and m > s
        if act == "sigmoid":
            checks.append(common.Check(f"BN speeds the deep sigmoid net up >= {LARGE:g}x", large, numbers, when=act))
        else:
            checks.append(common.Check(f"BN's gain with ReLU is doubtful (not >= {LARGE:g}x on every seed "
                                       "beyond the spread)", not large, numbers, when=act))
    vanish = by["sigmoid", "none"]["first_over_last"]
    checks.append(common.Check(
        "without BN the sigmoid net's first layer gets a smaller gradient than the last hidden one",
        max(vanish) < 1.0, f"|grad W1| / |grad W{len(rows[0]['grad_norms']) - 1}| "
        f"{common.pm(vanish, '{:.2e}')} (with BN {common.pm(by['sigmoid', 'before']['first_over_last'], '{:.2e}')}, "
        f"ReLU no BN {common.pm(by['relu', 'none']['first_over_last'], '{:.2e}')})"))
    return common.verdict(checks)


def draw(rows):
    from plots import lines
    dashed = {r["case"]: "--" for r in rows if r["placement"] == "none"}

    def fig(figure):
        figure.set_size_inches(10, 4)
        ax = figure.add_subplot(1, 2, 1)
        lines(ax, {r["case"]: (r["samples"], np.mean(r["curves"], axis=0)) for r in rows},
              "samples seen", "training loss (nats, mean over seeds)", "convergence", logy=True,
              linestyles=dashed)
        ax = figure.add_subplot(1, 2, 2)
        lines(ax, {r["case"]: (np.arange(1, len(r["grad_norms"]) + 1), r["grad_norms"]) for r in rows},
              "Linear layer (1 = input side)", "|dL/dW| at init (Frobenius)", "gradient per layer",
              logy=True, linestyles=dashed)
    return fig


def main(argv=None):
    args = parse_args(argv)
    if args.depth < 8 and not args.tiny:
        print(f"note: depth {args.depth} < 8; the claim is about deep nets")
    rows = measure(args)
    result = conclude(rows)
    table = [dict(r, f=common.pm(r["final"]), a=common.pm(r["accuracy"]),
                  g=" ".join(f"{v:.1e}" for v in r["grad_norms"])) for r in rows]
    text = "\n".join([
        f"Lab 5: depth {args.depth} x {args.hidden}, batch {args.batch}, {args.budget} samples per run, "
        f"SGD lr {args.lr} momentum 0.9, mean ± spread over {len(args.seed_list)} seeds", "",
        common.format_table(table, [("case", "case", "{}"), ("f", "final training loss", "{}"),
                                    ("a", "held-out acc", "{}"), ("g", "|dL/dW| per layer at init", "{}")])])
    common.finish(None, args, {"lab": "05_deep_sigmoid", "rows": rows, "verdict": result}, text,
                  {"05_deep_sigmoid.png": draw(rows)})


if __name__ == "__main__":
    main()
