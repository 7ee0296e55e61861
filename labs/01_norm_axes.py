"""Lab 1: BatchNorm normalises each feature over the batch; LayerNorm normalises each
sample over its features.

What it does (float64, training mode, K seeds of random inputs whose features and samples
have different means and scales):

1. Axes. For an FC input (N, C) and a conv input (N, C, H, W), the mean and the (biased)
   variance per feature (over the batch, and H, W) and per sample (over its features),
   before and after `nn.BatchNorm1d/2d` and `nn.LayerNorm`.
2. Batch-mates. How much sample 0's output moves when sample 1 of its batch changes,
   in training mode and in eval mode (running statistics).
3. Under DDP (launched on N > 1 ranks): K steps of an MLP with each norm on N ranks against
   the same model on the global batch in one process: plain BatchNorm drifts (it
   normalises each shard on its own), SyncBatchNorm and LayerNorm do not.

    python labs/01_norm_axes.py                      # parts 1 and 2
    mpiexec -n 4 python labs/01_norm_axes.py         # and part 3
    python labs/01_norm_axes.py --quick --out /tmp/lab1 --json /tmp/lab1.json
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import numpy as np

from minidist import Tensor, nn
from minidist.comm import Communicator
from minidist.data import spirals
from minidist.optim import SGD
from minidist.parallel import MLP, Trainer, distributed_loader, wrap

CLAIM = ("BatchNorm normalises each feature over the batch; LayerNorm normalises each sample "
         "over its features.")
NORMS = {"batch": "BatchNorm", "sync": "SyncBatchNorm", "layer": "LayerNorm"}
SHOWN = 4  # features and samples printed one by one


def parse_args(argv=None):
    p = common.lab_parser(__doc__)
    p.add_argument("--batch", type=int, default=16, help="samples in the batch (and per rank in part 3)")
    p.add_argument("--features", type=int, default=8, help="C: features (FC) or channels (conv)")
    p.add_argument("--steps", type=int, default=40, help="part 3: training steps")
    p.add_argument("--hidden", type=int, default=32, help="part 3: MLP width")
    args = common.parse(p, argv)
    if args.quick:
        args.steps, args.hidden = 4, 8
    if args.batch < 2:
        p.error(f"--batch must be >= 2: part 2 changes a second sample (got {args.batch})")
    return args


def inputs(rng, n, c, conv):
    """Features with different means and scales, samples with different offsets."""
    shape = (n, c, 4, 4) if conv else (n, c)
    bshape = (1, c, 1, 1) if conv else (1, c)
    sshape = (n, 1, 1, 1) if conv else (n, 1)
    return (rng.normal(0, 3, bshape) + rng.normal(0, 1, sshape)
            + rng.uniform(0.5, 3, bshape) * rng.standard_normal(shape))


def make_layer(name, c, conv):
    if name == "BatchNorm":
        return (nn.BatchNorm2d if conv else nn.BatchNorm1d)(c, dtype=np.float64)
    return nn.LayerNorm((c, 4, 4) if conv else c, dtype=np.float64)


def layers(c, conv):
    made = {name: make_layer(name, c, conv) for name in ("BatchNorm", "LayerNorm")}
    return {"input": lambda x: x, **{name: (lambda x, m=m: m(Tensor(x)).data) for name, m in made.items()}}


def axis_stats(y) -> dict:
    """Mean and biased variance per feature (over batch and H, W) and per sample."""
    feature_axes = (0, 2, 3) if y.ndim == 4 else (0,)
    sample_axes = tuple(range(1, y.ndim))
    return {"feature_mean": y.mean(feature_axes), "feature_var": y.var(feature_axes),
            "sample_mean": y.mean(sample_axes), "sample_var": y.var(sample_axes)}


def axes_part(args) -> list[dict]:
    """One row per (input kind, stage): per-seed worst distances from mean 0 / variance 1,
    and the first features' and samples' values (first seed)."""
    rows = []
    for kind, conv in (("FC", False), ("conv", True)):
        per_stage = {}
        for seed in args.seed_list:
            x = inputs(np.random.default_rng(seed), args.batch, args.features, conv)
            for stage, f in layers(args.features, conv).items():
                per_stage.setdefault(stage, []).append(axis_stats(f(x)))
        for stage, stats in per_stage.items():
            row = {"input": kind, "stage": stage}
            for key in ("feature", "sample"):
                row[f"{key}_mean_off"] = [float(np.abs(s[f"{key}_mean"]).max()) for s in stats]
                row[f"{key}_var_off"] = [float(np.abs(s[f"{key}_var"] - 1).max()) for s in stats]
                row[f"{key}_mean_first"] = stats[0][f"{key}_mean"][:SHOWN].tolist()
                row[f"{key}_var_first"] = stats[0][f"{key}_var"][:SHOWN].tolist()
                row[f"{key}_var_all"] = stats[0][f"{key}_var"].tolist()
            rows.append(row)
    return rows


def batchmate_part(args) -> list[dict]:
    """|change of sample 0's output| when sample 1 changes, per norm, train and eval mode."""
    rows = []
    for conv in (False, True):
        for name in ("BatchNorm", "LayerNorm"):
            moved = {"train": [], "eval": []}
            for seed in args.seed_list:
                rng = np.random.default_rng(seed)
                x = inputs(rng, args.batch, args.features, conv)
                changed = x.copy()
                changed[1] = rng.normal(5, 4, x.shape[1:])
                layer = make_layer(name, args.features, conv)
                for mode in ("train", "eval"):
                    layer.train(mode == "train")
                    out = layer(Tensor(x)).data[0], layer(Tensor(changed)).data[0]
                    moved[mode].append(float(np.abs(out[0] - out[1]).max()))
            rows.append({"norm": name, "input": "conv" if conv else "FC", **moved})
    return rows


# ---- part 3: under DDP -------------------------------------------------------------------------
def train_norm(args, comm, norm, distributed, data, test, seed):
    """K steps of `norm` under DDP (`distributed`) or in one process on the global batch."""
    net = MLP(2, args.hidden, 3, norm=norm, comm=comm if norm == "sync" else None, rng=seed,
              dtype=np.float64)
    model = wrap(net, "ddp", comm) if distributed else wrap(net, "local")
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = distributed_loader(*data, args.batch * (1 if distributed else comm.size),
                                comm if distributed else None, seed=seed, drop_last=True)
    trainer = Trainer(model, opt, comm=comm if distributed else None, progress=False)
    trainer.train_epoch(common.StepLoader(loader, args.steps))
    return net, trainer.evaluate(*test)


def drift_part(args, comm) -> list[dict]:
    rows = {norm: {"norm": norm, "layer": NORMS[norm], "max_param_diff": [], "accuracy": [],
                   "reference_accuracy": []} for norm in NORMS}
    for seed in args.seed_list:
        X, y = spirals(120 if args.quick else 200, 3, seed=seed)
        Xt, yt = spirals(100, 3, seed=seed + 1000)
        data, test = (X.astype(np.float64), y), (Xt.astype(np.float64), yt)
        references = {}
        for norm in NORMS:
            ref_norm = "batch" if norm == "sync" else norm  # SyncBN must equal BN on the global batch
            if ref_norm not in references:
                references[ref_norm] = train_norm(args, comm, ref_norm, False, data, test, seed)
            ref_net, ref_acc = references[ref_norm]
            net, acc = train_norm(args, comm, norm, True, data, test, seed)
            diff = np.abs(common.flat_parameters(net) - common.flat_parameters(ref_net)).max()
            rows[norm]["max_param_diff"].append(common.max_over_ranks(comm, diff))
            rows[norm]["accuracy"].append(acc)
            rows[norm]["reference_accuracy"].append(ref_acc)
    return list(rows.values())


# ---- verdict, table, plot ----------------------------------------------------------------------
def conclude(axes, mates, drift, size) -> dict:
    # mean 0 to round-off; variance v / (v + eps) with eps = 1e-5: 1 to within 1e-3 for v > 0.01
    mean_tol, var_tol = 1e-9, 1e-3
    by = {(r["input"], r["stage"]): r for r in axes}
    checks = []
    for kind in ("FC", "conv"):
        for stage, key in (("BatchNorm", "feature"), ("LayerNorm", "sample")):
            r = by[kind, stage]
            mean_off, var_off = max(r[f"{key}_mean_off"]), max(r[f"{key}_var_off"])
            checks.append(common.Check(
                f"{kind}: {stage} gives every {key} mean 0, variance 1", mean_off < mean_tol and var_off < var_tol,
                f"worst |mean| {mean_off:.1e}, worst |var-1| {var_off:.1e} over {key}s and seeds"))
        bn, ln = by[kind, "BatchNorm"], by[kind, "LayerNorm"]
        cross = min(min(bn["sample_var_off"]), min(ln["feature_var_off"]))
        checks.append(common.Check(f"{kind}: neither normalises the other axis", cross > 10 * var_tol,
                                   f"smallest worst |var-1| on the other axis {cross:.2e}"))
    for r in mates:
        moved = min(r["train"]) if r["norm"] == "BatchNorm" else max(r["train"])
        ok = moved > 1e-6 if r["norm"] == "BatchNorm" else moved < 1e-12
        what = "moves" if r["norm"] == "BatchNorm" else "does not move"
        checks.append(common.Check(f"{r['input']}: {r['norm']}'s sample-0 output {what} when a batch-mate "
                                   "changes (train mode)", ok, f"|change| {common.pm(r['train'], '{:.1e}')}"))
    frozen = max(max(r["eval"]) for r in mates)
    checks.append(common.Check("eval mode: no output depends on a batch-mate", frozen < 1e-12,
                               f"largest |change| {frozen:.1e}"))
    if size > 1:
        d = {r["norm"]: r["max_param_diff"] for r in drift}
        checks += [
            common.Check("BatchNorm under DDP drifts from the global-batch model", min(d["batch"]) > 1e-6,
                         f"max |param - ref| {common.pm(d['batch'], '{:.1e}')}"),
            common.Check("SyncBatchNorm does not", max(d["sync"]) <= common.TOLERANCE,
                         f"{max(d['sync']):.1e}"),
            common.Check("LayerNorm does not", max(d["layer"]) <= common.TOLERANCE, f"{max(d['layer']):.1e}")]
    return common.verdict(checks)


def tables(args, axes, mates, drift, size) -> str:
    fmt = lambda v: " ".join(f"{x:+.2f}" for x in v)  # noqa: E731
    rows = [dict(r, **{k: fmt(r[k]) for k in ("feature_mean_first", "feature_var_first",
                                              "sample_mean_first", "sample_var_first")},
                 fvar=common.pm(r["feature_var_off"], "{:.1e}"), svar=common.pm(r["sample_var_off"], "{:.1e}"))
            for r in axes]
    text = [f"Lab 1: normalisation axes, batch {args.batch}, C={args.features} (conv: 4x4), float64, "
            f"{len(args.seed_list)} seeds",
            "", f"1. Mean and variance per feature and per sample (first {SHOWN}, seed {args.seed_list[0]}); "
            "worst |var - 1| as mean ± spread over seeds",
            common.format_table(rows, [
                ("input", "input", "{}"), ("stage", "stage", "{}"),
                ("feature_mean_first", "per-feature mean", "{}"), ("feature_var_first", "per-feature var", "{}"),
                ("fvar", "worst feat |var-1|", "{}"),
                ("sample_mean_first", "per-sample mean", "{}"), ("sample_var_first", "per-sample var", "{}"),
                ("svar", "worst sample |var-1|", "{}")]),
            "", "2. |change of sample 0's output| when sample 1 of its batch changes (mean ± spread)",
            common.format_table([dict(r, tr=common.pm(r["train"], "{:.1e}"), ev=common.pm(r["eval"], "{:.1e}"))
                                 for r in mates],
                                [("input", "input", "{}"), ("norm", "norm", "{}"), ("tr", "train mode", "{}"),
                                 ("ev", "eval mode", "{}")])]
    if size > 1:
        text += ["", f"3. Under DDP on {size} ranks x {args.batch}, {args.steps} steps: distance from the "
                 "one-process global-batch model",
                 common.format_table([dict(r, d=common.pm(r["max_param_diff"], "{:.1e}"),
                                           a=common.pm(r["accuracy"]), ra=common.pm(r["reference_accuracy"]))
                                      for r in drift],
                                     [("layer", "norm under DDP", "{}"), ("d", "max |param - ref|", "{}"),
                                      ("a", "eval acc (DDP)", "{}"), ("ra", "eval acc (ref)", "{}")])]
    return "\n".join(text)


def draw(axes):
    from plots import lines

    def fig(figure):
        figure.set_size_inches(9, 7)
        for i, kind in enumerate(("FC", "conv")):
            for j, key in enumerate(("feature", "sample")):
                ax = figure.add_subplot(2, 2, 2 * i + j + 1)
                series = {}
                for r in axes:
                    if r["input"] == kind:
                        v = r[f"{key}_var_all"]
                        series[r["stage"]] = (np.arange(len(v)), v)
                lines(ax, series, f"{key} index", "variance (input units²)", f"{kind}: variance per {key}",
                      logy=True)
    return fig


def main(argv=None):
    args = parse_args(argv)
    comm = Communicator()
    axes, mates = axes_part(args), batchmate_part(args)
    drift = drift_part(args, comm) if comm.size > 1 else []
    result = conclude(axes, mates, drift, comm.size)
    common.finish(comm, args, {"lab": "01_norm_axes", "world_size": comm.size, "axes": axes,
                               "batchmates": mates, "drift": drift, "verdict": result},
                  tables(args, axes, mates, drift, comm.size), {"01_norm_axes.png": draw(axes)})


if __name__ == "__main__":
    main()
