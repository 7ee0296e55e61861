"""Lab 7: gathering the outputs to rank 0 and computing the loss there (torch.nn.DataParallel's
flow, "dp-root") is slower and heavier on rank 0 than dp.

What it does. For each N from 2 to the mpiexec -n (the first N ranks), the same float32
MLP with a wide output layer (`--outputs` classes: logits are what dp-root moves) trains a
few steps under "dp" (every rank computes its loss; gradients gathered to rank 0) and
"dp-root" (``wrap(net, "dp", comm, loss_on_root=True)``: outputs gathered to rank 0, the
loss there on the global batch, output gradients scattered back, then dp's gradient
gather), on the same global batches, K seeds. Reported per N: rank 0's bytes per step and
by phase (ledger), rank 0's peak memory and its communication peak (the library's memory
report), the modelled step time (`stepcost` for dp, plus the cost model's gather and
scatter of the outputs for dp-root), and the measured time (loaded machine).

The claim holds at N when dp-root costs rank 0 more bytes, more peak memory and more
modelled time than dp. Required too: rank 0's memory report counts the gathered outputs
and their gradients (its communication peak is at least 2 N b outputs x 4 bytes).

    mpiexec -n 4 python labs/07_dp_root_loss.py
    mpiexec -n 4 python labs/07_dp_root_loss.py --outputs 10 --hidden 256    # small logits
    mpiexec -n 2 python labs/07_dp_root_loss.py --quick --out /tmp/lab7
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import numpy as np

import measure
from minidist.parallel import MLP

CLAIM = ("Gathering outputs to rank 0 and computing the loss there (torch.nn.DataParallel's flow) "
         "is slower and heavier on rank 0.")
STRATEGIES = ("dp", "dp-root")
F32 = 4


def parse_args(argv=None):
    p = common.lab_parser(__doc__)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--features", type=int, default=16, help="input features")
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--outputs", type=int, default=1000, help="classes: the width of the logits")
    p.add_argument("--batch", type=int, default=32, help="samples per rank per step")
    p.add_argument("--profile", choices=sorted(common.PROFILES), default="ib-hdr")
    args = common.parse(p, argv)
    if args.quick:
        args.steps, args.outputs, args.batch = 2, 200, 16
    return args


def make_data(args):
    def data(seed):
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((512, args.features)).astype(np.float32),
                rng.integers(0, args.outputs, 512).astype(np.int64))
    return data


def predicted(args, n, shape) -> dict:
    """Rank 0's bytes and the modelled seconds of one step, from the library's step-cost
    predictor: dp, and dp with loss_on_root (the outputs' gather and their gradients'
    scatter, `outputs` = (global rows, logits per row))."""
    out = {}
    for name, options in (("dp", {}), ("dp-root", {"loss_on_root": True,
                                                   "outputs": (n * args.batch, args.outputs)})):
        step = common.predict_step("dp", n, shape, profile=args.profile, optimizer_slots=1, **options)
        out[name] = (step["rank0"]["bytes_sent"] + step["rank0"]["bytes_received"], step["seconds"])
    return out


def measured_rows(args, world) -> list[dict]:
    rows = []
    net = lambda seed: MLP(args.features, args.hidden, args.outputs, depth=1, rng=seed)  # noqa: E731
    for n, comm in common.sub_communicators(world, range(2, world.size + 1)):
        for strategy in STRATEGIES:
            per_seed = measure.seeds_loop(args, comm, strategy, net, make_data(args), batch=args.batch,
                                          steps=args.steps)
            if comm.rank == 0:
                row = measure.summary(per_seed, n, strategy)
                row["predicted_rank0_bytes"], row["modelled_s"] = predicted(args, n, common.describe(net(0)))[strategy]
                row["outputs_and_grads"] = 2 * n * args.batch * args.outputs * F32
                rows.append(row)
    return rows


def conclude(rows) -> dict:
    by = {(r["strategy"], r["size"]): r for r in rows}
    checks = []
    exact = all(r["rank0_bytes"] == r["predicted_rank0_bytes"] for r in rows)
    checks.append(common.Check("rank 0's ledger bytes equal the step-cost prediction (dp-root: with the outputs' "
                               "gather and scatter)", exact,
                               "; ".join(f"{r['strategy']} N={r['size']}: {r['rank0_bytes']:.0f} vs "
                                         f"{r['predicted_rank0_bytes']:.0f}" for r in rows if
                                         r["rank0_bytes"] != r["predicted_rank0_bytes"]) or "all equal"))
    roots = [r for r in rows if r["strategy"] == "dp-root"]
    counted = all(r["rank0_comm_peak"] >= r["outputs_and_grads"] for r in roots)
    checks.append(common.Check("rank 0's memory report counts the gathered outputs and their gradients", counted,
                               "; ".join(f"N={r['size']}: comm peak {r['rank0_comm_peak'] / 1024:.0f} KiB, "
                                         f"outputs + gradients {r['outputs_and_grads'] / 1024:.0f} KiB"
                                         for r in roots)))
    for n in sorted({r["size"] for r in rows}):
        dp, root = by["dp", n], by["dp-root", n]
        ok = (root["rank0_bytes"] > dp["rank0_bytes"] and root["rank0_peak"] > dp["rank0_peak"]
              and root["modelled_s"] > dp["modelled_s"])
        checks.append(common.Check(
            "dp-root costs rank 0 more bytes, memory and modelled time than dp", ok,
            f"rank-0 bytes {root['rank0_bytes'] / dp['rank0_bytes']:.2f}x, peak memory "
            f"{root['rank0_peak'] / dp['rank0_peak']:.2f}x, "
            f"modelled time {root['modelled_s'] / dp['modelled_s']:.2f}x; "
            f"measured {root['ms_mean']:.1f} ± {root['ms_spread']:.1f} vs {dp['ms_mean']:.1f} ± {dp['ms_spread']:.1f} "
            "ms/step (loaded machine, not decisive)", when=f"N={n}"))
    return common.verdict(checks)


def draw(rows, profile):
    from plots import lines

    def fig(figure):
        figure.set_size_inches(12, 4)
        panels = (("rank0_bytes", 2**10, "rank-0 KiB per step (ledger)"),
                  ("rank0_peak", 2**10, "rank-0 peak memory (KiB, memory report)"),
                  ("modelled_s", 1e-3, f"modelled ms per step ({profile})"))
        for i, (key, unit, label) in enumerate(panels):
            ax = figure.add_subplot(1, 3, i + 1)
            lines(ax, {s: ([r["size"] for r in rows if r["strategy"] == s],
                           [r[key] / unit for r in rows if r["strategy"] == s]) for s in STRATEGIES},
                  "ranks N", label)
    return fig


def main(argv=None):
    args = parse_args(argv)
    world = measure.world("07_dp_root_loss.py")
    rows = measured_rows(args, world)
    if world.rank != 0:
        return
    result = conclude(rows)
    table = [dict(r, kib=r["rank0_bytes"] / 1024, peak=r["rank0_peak"] / 1024, cpeak=r["rank0_comm_peak"] / 1024,
                  out=r["rank0_phases"].get("output-gather", 0) / 1024,
                  scat=r["rank0_phases"].get("output-grad-scatter", 0) / 1024,
                  ms=f"{r['ms_mean']:.1f} ± {r['ms_spread']:.1f}", mod=1e3 * r["modelled_s"]) for r in rows]
    text = "\n".join([
        f"Lab 7: dp vs dp-root, MLP({args.features}-{args.hidden}-{args.outputs}) float32, {args.batch} samples per "
        f"rank, {args.steps} steps, {len(args.seed_list)} seeds; rank 0's numbers per step", "",
        common.format_table(table, [
            ("size", "N", "{}"), ("strategy", "strategy", "{}"), ("kib", "rank-0 KiB", "{:.1f}"),
            ("out", "output-gather KiB", "{:.1f}"), ("scat", "output-grad-scatter KiB", "{:.1f}"),
            ("peak", "rank-0 peak KiB", "{:.1f}"), ("cpeak", "of which comm peak", "{:.1f}"),
            ("mod", f"modelled ms ({args.profile})", "{:.3f}"), ("ms", "measured ms/step", "{}")])])
    common.finish(world, args, {"lab": "07_dp_root_loss", "world_size": world.size, "rows": rows, "verdict": result},
                  text, {"07_dp_root_loss.png": draw(rows, args.profile)})


if __name__ == "__main__":
    main()
