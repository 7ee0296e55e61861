"""Lab 4: BatchNorm's gamma and beta start at 1 and 0, which delays and stabilises the shift,
and a following Linear layer can absorb them.

What it does (one process, float64, spirals with 3 classes, K seeds):

1. Training at the same sample budget, for BN before the activation (Linear -> BN -> ReLU)
   and after it (Linear -> ReLU -> BN -> next Linear): affine BN with gamma=1, beta=0 at
   the start ("affine"), affine BN started at random gamma ~ U(0.2, 3), beta ~ N(0, 1)
   ("random-affine": the shift applied from step 0), and BN without gamma, beta
   ("no-affine"). Reported: the loss over the first tenth of the run (the start), its
   spread over seeds, the final loss, and how far gamma and beta travelled from 1 and 0.
2. Folding (float64, after training, eval mode): gamma, beta of a BN that feeds a Linear
   folded into that Linear (W diag(gamma), W beta + b), the BN left without affine; and a
   BN folded into the Linear before it at inference (W' = gamma/sigma W, b' = gamma (b -
   mu)/sigma + beta). Both must give the same function to 1e-12.

    python labs/04_affine_fold.py
    python labs/04_affine_fold.py --quick --out /tmp/lab4
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import numpy as np

from minidist import Tensor, nn, no_grad
from models import NormMLP

CLAIM = ("gamma and beta start at 1 and 0, which delays and stabilises the shift, and a following "
         "Linear layer can absorb them.")
VARIANTS = ("affine", "random-affine", "no-affine")
FOLD_TOL = 1e-12


def parse_args(argv=None):
    return common.training_args(__doc__, argv, depth=3, budget=12800, tiny_depth=2)


def norms(net) -> list:
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]


def make(args, placement, variant, seed):
    net = NormMLP(2, args.hidden, 3, args.depth, act="relu", placement=placement,
                  affine=variant != "no-affine", rng=seed)
    if variant == "random-affine":
        rng = np.random.default_rng(seed + 500)
        for bn in norms(net):
            bn.weight.data[...] = rng.uniform(0.2, 3.0, bn.weight.data.shape)
            bn.bias.data[...] = rng.normal(0.0, 1.0, bn.bias.data.shape)
    return net


def shift(net) -> float:
    """Mean |gamma - 1| + |beta| over every BN feature (0 without affine)."""
    parts = [np.abs(bn.weight.data - 1).mean() + np.abs(bn.bias.data).mean() for bn in norms(net) if bn.affine]
    return float(np.mean(parts)) if parts else 0.0


def training_part(args) -> tuple[list[dict], dict]:
    rows, trained = [], {}
    for placement in ("before", "after"):
        for variant in VARIANTS:
            row = {"placement": placement, "variant": variant, "start": [], "final": [], "moved": [],
                   "accuracy": []}
            curves = []
            for seed in args.seed_list:
                data, test = common.spiral_data(seed)
                net = make(args, placement, variant, seed)
                before = shift(net)
                run = common.train_local(net, data, test, batch=args.batch, budget=args.budget, lr=args.lr,
                                         seed=seed)
                curves.append(run["curve"])
                row["start"].append(float(np.mean(run["curve"][:2])))  # the first tenth of 20 stretches
                row["final"].append(run["final_loss"])
                row["accuracy"].append(run["accuracy"])
                row["moved"].append(shift(net) - before if variant == "affine" else None)
                trained.setdefault((placement, variant), []).append(net)
            row["samples"], row["curve"] = run["samples"], np.mean(curves, axis=0).tolist()
            rows.append(row)
    return rows, trained


def output(net, x) -> np.ndarray:
    with no_grad():
        return net(Tensor(x)).data


def fold_into_next(net, x) -> float:
    """Fold every BN's gamma, beta into the Linear after it (placement "after": BN feeds a
    Linear); the BN keeps normalising (train mode, batch statistics). Max |difference|."""
    reference, layers = output(net, x), list(net)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm1d):
            nxt = layers[i + 1]
            nxt.bias.data[...] = nxt.weight.data @ layer.bias.data + nxt.bias.data
            nxt.weight.data[...] = nxt.weight.data * layer.weight.data[None, :]
            layer.weight.data[...], layer.bias.data[...] = 1.0, 0.0  # what affine=False computes
    return float(np.abs(output(net, x) - reference).max())


def fold_into_previous(net, x) -> float:
    """Eval mode: fold every BN into the Linear before it (placement "before") and drop the
    BN. Max |difference| of the outputs."""
    net.eval()
    reference, layers, kept = output(net, x), list(net), []
    for layer in layers:
        if isinstance(layer, nn.BatchNorm1d):
            prev = kept[-1]
            scale = layer.weight.data / np.sqrt(layer.running_var.data + layer.eps)
            prev.bias.data[...] = scale * (prev.bias.data - layer.running_mean.data) + layer.bias.data
            prev.weight.data[...] = scale[:, None] * prev.weight.data
        else:
            kept.append(layer)
    return float(np.abs(output(nn.Sequential(*kept), x) - reference).max())


def folding_part(args, trained) -> dict:
    """Fold errors per seed, on a held-out batch: gamma, beta into the next Linear (the
    trained "after" nets) and BN into the previous Linear at inference ("before" nets)."""
    x = common.spiral_data(args.seed_list[0])[1][0][:64]
    return {"into_next": [fold_into_next(net, x) for net in trained["after", "affine"]],
            "into_previous": [fold_into_previous(net, x) for net in trained["before", "affine"]],
            "output_scale": float(np.abs(output(trained["before", "affine"][0], x)).max())}


def conclude(rows, folds) -> dict:
    by = {(r["placement"], r["variant"]): r for r in rows}
    checks = [
        common.Check("folding gamma, beta into the next Linear gives the same function (float64)",
                     max(folds["into_next"]) < FOLD_TOL, f"max |difference| {max(folds['into_next']):.1e} "
                     f"over {len(folds['into_next'])} trained nets (tolerance {FOLD_TOL:g})"),
        common.Check("folding BN into the previous Linear at inference gives the same function",
                     max(folds["into_previous"]) < FOLD_TOL,
                     f"max |difference| {max(folds['into_previous']):.1e} (outputs up to {folds['output_scale']:.1f})")]
    for placement in ("before", "after"):
        one, rand, off = (by[placement, v] for v in VARIANTS)
        calm, note = common.across_seeds(np.array(one["start"]) < np.array(rand["start"]))
        checks.append(common.Check(
            "starting at gamma=1, beta=0 trains better at the start than a random shift", calm,
            f"loss over the first tenth {common.pm(one['start'])} vs random start {common.pm(rand['start'])} "
            f"(lower on {note})",
            when=f"BN {placement} the activation"))
        gap = np.array(off["final"]) - np.array(one["final"])
        m, s = common.mean_spread(gap)
        checks.append(common.Check(
            "without gamma, beta the net does as well (the next Linear absorbs them)", m <= max(s, 0.02),
            f"final loss no-affine {common.pm(off['final'])} vs affine {common.pm(one['final'])} "
            f"(difference {m:+.3f} ± {s:.3f})", when=f"BN {placement} the activation"))
    return common.verdict(checks)


def draw(rows):
    from plots import lines

    def fig(figure):
        figure.set_size_inches(9, 4)
        for i, placement in enumerate(("before", "after")):
            ax = figure.add_subplot(1, 2, i + 1)
            series = {r["variant"]: (r["samples"], r["curve"]) for r in rows if r["placement"] == placement}
            lines(ax, series, "samples seen", "training loss (nats, mean over seeds)",
                  f"BN {placement} ReLU", logy=True)
    return fig


def main(argv=None):
    args = parse_args(argv)
    rows, trained = training_part(args)
    folds = folding_part(args, trained)
    result = conclude(rows, folds)
    table = [dict(r, s=common.pm(r["start"]), f=common.pm(r["final"]), a=common.pm(r["accuracy"]),
                  m=common.pm(r["moved"]) if r["variant"] == "affine" else None) for r in rows]
    text = "\n".join([
        f"Lab 4: gamma and beta, MLP depth {args.depth} x {args.hidden} with ReLU, batch {args.batch}, "
        f"{args.budget} samples per run, mean ± spread over {len(args.seed_list)} seeds", "",
        common.format_table(table, [
            ("placement", "BN", "{}"), ("variant", "gamma, beta", "{}"), ("s", "loss, first tenth", "{}"),
            ("f", "final loss", "{}"), ("a", "held-out acc", "{}"), ("m", "mean |g-1|+|b| moved", "{}")]),
        "", "Folding, max |output difference| per trained net (float64): into the next Linear "
        + ", ".join(f"{v:.1e}" for v in folds["into_next"]) + "; into the previous Linear at inference "
        + ", ".join(f"{v:.1e}" for v in folds["into_previous"])])
    common.finish(None, args, {"lab": "04_affine_fold", "rows": rows, "folding": folds, "verdict": result},
                  text, {"04_affine_fold.png": draw(rows)})


if __name__ == "__main__":
    main()
