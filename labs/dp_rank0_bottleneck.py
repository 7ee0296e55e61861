"""Lab: DP and hub funnel everything through rank 0; DDP's ring spreads it.

The claim. Under "dp" (torch.nn.DataParallel's single master) rank 0 receives every other
rank's full gradient and sends every other rank the updated parameters; under "hub" it
receives N-1 gradients (reduce) and sends N-1 averages (broadcast). Either way rank 0 moves
(N-1) x the model per step in each direction while every other rank moves 1 x, and dp's
rank 0 must also hold all N gradients at once. DDP's ring all-reduce gives every rank the
same load, 2(N-1)/N x the model each way: below 2 x, whatever N.

What the experiment does. For each N in --sizes (default 2, 3, ..., the mpiexec -n) the
first N ranks of COMM_WORLD form a sub-communicator (`comm.mpi.Split`; the rest wait) and
train the same MLP for a few steps under dp, hub and ddp (`wrap` + `Trainer`). Each rank's
ledger gives its bytes and messages per step, its `model.memory` its peak bytes; rank 0
gathers them. Beside each measurement: `minidist.cost.stepcost.predict_step` for the
same model and N (closed forms: they must equal the ledger to the byte). Then the same
predictor for large N on a named hardware profile (default InfiniBand HDR), in units of
the model's size, with the predicted seconds.

The measured milliseconds per step are honest but local: with more ranks than cores (4
ranks on a 2-core machine) they show the scheduler as much as the wire. The bytes and
messages do not depend on the machine; for time at scale read the predicted seconds.

Run it:

    mpiexec -n 4 python labs/dp_rank0_bottleneck.py                  # N = 2, 3, 4
    mpiexec -n 4 python labs/dp_rank0_bottleneck.py --sizes 4 --hidden 512
    mpiexec -n 4 python labs/dp_rank0_bottleneck.py --project-params 1e9 --profile 100gbe
    mpiexec -n 3 python labs/dp_rank0_bottleneck.py --quick --json runs/lab-rank0.json
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import sys

import numpy as np
from mpi4py import MPI

from minidist.comm import Communicator, gather_to_root
from minidist.cost.profiles import PROFILES
from minidist.data import spirals
from minidist.optim import SGD
from minidist.parallel import MLP, Trainer, distributed_loader, wrap
from minidist.cost.stepcost import dense, describe, predict_step

STRATEGIES = ("dp", "hub", "ddp")
PEAKS = ("rank0_peak", "predicted_rank0_peak", "rank1_peak", "predicted_rank1_peak")
# 2(N-1)/N x the model, plus the tiny shard-size all-reduce and uneven chunks when N > elements
DDP_MAX_PER_MODEL = 2.02
# what each rank reports, per step, in this order
FIELDS = ("bytes_sent", "bytes_received", "messages_sent", "messages_received", "peak", "seconds")


def parse_args(argv=None):
    p = common.lab_parser(__doc__)
    p.add_argument("--sizes", type=common.int_list, default=None,
                   help="rank counts to measure, each <= the mpiexec -n (default: 2, 3, ..., n)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--hidden", type=int, default=256, help="MLP width (the model is ~hidden^2 floats)")
    p.add_argument("--batch", type=int, default=16, help="samples per rank per step")
    p.add_argument("--project", type=common.int_list, default=[8, 64, 512, 4096],
                   help="rank counts for the projection")
    p.add_argument("--profile", choices=sorted(PROFILES), default="ib-hdr")
    p.add_argument("--project-params", type=float, default=None,
                   help="project a dense float32 model of this many parameters (default: the lab's MLP)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.hidden, args.batch = 2, 32, 8
    return args


def measure(args, comm, strategy) -> dict:
    """Train `args.steps` steps of `strategy` on `comm`; rank 0 gets every rank's numbers
    (array rows in rank order, FIELDS per step), the others None."""
    X, y = spirals(64, 3, seed=args.seed)
    net = MLP(2, args.hidden, 3, rng=args.seed)
    model = wrap(net, strategy, comm)
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = distributed_loader(X, y, args.batch, comm, seed=args.seed, drop_last=True)
    comm.ledger.reset()  # the steps only, not wrap's initial broadcast
    trainer = Trainer(model, opt, comm=comm, progress=False)
    history = trainer.train_epoch(common.StepLoader(loader, args.steps))
    t = comm.ledger.totals()
    mine = np.array([t["bytes_sent"] / args.steps, t["bytes_received"] / args.steps,
                     t["messages_sent"] / args.steps, t["messages_received"] / args.steps,
                     model.memory.peak, history["seconds"] / args.steps], dtype=np.float64)
    with comm.phase("lab"):
        everyone = gather_to_root(comm, mine)
    return {"per_rank": everyone, "shape": describe(net)}


def measured_row(n, strategy, per_rank, shape) -> dict:
    """One table row: rank 0 beside the other ranks, measured and predicted."""
    col = {f: per_rank[:, i] for i, f in enumerate(FIELDS)}
    traffic = col["bytes_sent"] + col["bytes_received"]
    messages = col["messages_sent"] + col["messages_received"]
    cost = predict_step(strategy, n, shape, optimizer_slots=1)
    predicted = {who: cost[who]["bytes_sent"] + cost[who]["bytes_received"] for who in ("rank0", "other")}
    model = shape.param_bytes
    return {
        "size": n, "strategy": strategy, "model_bytes": model,
        "rank0_bytes": float(traffic[0]), "rank1_bytes": float(traffic[1]),
        "other_bytes_max": float(traffic[1:].max()), "other_bytes_min": float(traffic[1:].min()),
        "rank0_over_other": float(traffic[0] / traffic[1:].mean()),
        "rank0_bytes_per_model": float(traffic[0] / model),
        "rank0_messages": float(messages[0]), "rank1_messages": float(messages[1]),
        "rank0_messages_sent": float(col["messages_sent"][0]),
        "predicted_rank0_messages_sent": cost["rank0"]["messages_sent"],
        "predicted_rank1_messages_sent": cost["other"]["messages_sent"],
        "rank1_messages_sent": float(col["messages_sent"][1]),
        "rank0_peak": float(col["peak"][0]), "rank1_peak": float(col["peak"][1]),
        "predicted_rank0_bytes": predicted["rank0"], "predicted_rank1_bytes": predicted["other"],
        "predicted_rank0_peak": cost["memory"]["rank0"]["peak"],
        "predicted_rank1_peak": cost["memory"]["other"]["peak"],
        "ms_per_step": 1e3 * float(col["seconds"].max())}


def projection_rows(args, shape) -> list[dict]:
    """stepcost's prediction for each N in --project: rank 0's bytes in and out per step in
    units of the model's bytes, a non-root rank's, and the seconds on --profile."""
    rows, model = [], shape.param_bytes
    for n in args.project:
        row = {"size": n}
        for strategy in STRATEGIES:
            cost = predict_step(strategy, n, shape, profile=args.profile, optimizer_slots=1)
            row[f"{strategy}_rank0_in"] = cost["rank0"]["bytes_received"] / model
            row[f"{strategy}_rank0_out"] = cost["rank0"]["bytes_sent"] / model
            row[f"{strategy}_other_out"] = cost["other"]["bytes_sent"] / model
            row[f"{strategy}_seconds"] = cost["seconds"]
            row[f"{strategy}_rank0_peak_per_model"] = cost["memory"]["rank0"]["peak"] / model
        rows.append(row)
    return rows


def conclude(rows, projection) -> tuple[dict, str]:
    by = {(r["strategy"], r["size"]): r for r in rows}
    sizes = sorted({r["size"] for r in rows})
    checks = {
        "dp: rank 0 moves exactly (N-1) x a non-root rank's bytes": all(
            by["dp", n]["rank0_bytes"] == (n - 1) * by["dp", n]["other_bytes_max"]
            == (n - 1) * by["dp", n]["other_bytes_min"] for n in sizes),
        "hub: the same": all(by["hub", n]["rank0_bytes"] == (n - 1) * by["hub", n]["other_bytes_max"]
                             for n in sizes),
        "ddp: every rank moves about the same (within 5%)": all(
            max(r["rank0_bytes"], r["other_bytes_max"]) <= 1.05 * min(r["rank0_bytes"], r["other_bytes_min"])
            for r in rows if r["strategy"] == "ddp"),
        "ddp: about 2 x the model each way, at most": all(
            r["rank0_bytes_per_model"] <= 2 * DDP_MAX_PER_MODEL for r in rows if r["strategy"] == "ddp"),
        "the ledger equals stepcost's closed forms (bytes and messages, ranks 0 and 1)": all(
            r["rank0_bytes"] == r["predicted_rank0_bytes"] and r["rank1_bytes"] == r["predicted_rank1_bytes"]
            and r["rank0_messages_sent"] == r["predicted_rank0_messages_sent"]
            and r["rank1_messages_sent"] == r["predicted_rank1_messages_sent"] for r in rows),
    }
    if len(sizes) > 1:
        grows = by["dp", sizes[-1]]["rank0_peak"] > by["dp", sizes[0]]["rank0_peak"]
        checks["dp: rank 0's peak memory grows with N"] = grows
    big = projection[-1] if projection else None
    if big:
        n = big["size"]
        near = abs(big["dp_rank0_in"] / (n - 1) - 1) < 0.01
        checks[f"predicted at N={n}: dp's rank 0 receives ~(N-1) x the model"] = near
        checks["predicted: ddp's rank 0 sends about 2 x the model at every N"] = all(
            r["ddp_rank0_out"] <= DDP_MAX_PER_MODEL for r in projection)
    ok, word = common.verdict(checks)
    last = sizes[-1]
    text = (f"Conclusion: the claim {word}. Measured at N={last}: rank 0 moves "
            f"{by['dp', last]['rank0_over_other']:.2f}x a non-root rank's bytes under dp, "
            f"{by['hub', last]['rank0_over_other']:.2f}x under hub, "
            f"{by['ddp', last]['rank0_over_other']:.2f}x under ddp")
    if big:
        text += (f"; predicted at N={big['size']}: dp's rank 0 receives {big['dp_rank0_in']:.0f} x the model "
                 f"per step, ddp's {big['ddp_rank0_in']:.2f} x")
    return {"holds": ok, "checks": checks}, text + "."


def memory_note(rows) -> str:
    """Where the measured peak memory differs from stepcost's `predict_memory` (its model
    of the transient buffers is simpler than what the collectives allocate)."""
    off = [f"{r['strategy']} N={r['size']} rank {k}: "
           f"{r[f'rank{k}_peak'] - r[f'predicted_rank{k}_peak']:+.0f} B"
           for r in rows for k in (0, 1) if r[f"rank{k}_peak"] != r[f"predicted_rank{k}_peak"]]
    if not off:
        return "Peak memory: measured = predicted for every strategy, N and rank."
    return "Peak memory, measured minus predicted where they differ: " + "; ".join(off) + "."


def main(argv=None):
    args = parse_args(argv)
    world = Communicator()
    sizes = args.sizes or list(range(2, world.size + 1))
    if world.size < 2 or max(sizes) > world.size or min(sizes) < 2:
        if world.rank == 0:  # every rank stops; one says why
            print(f"need mpiexec -n >= 2 and every --sizes entry in [2, {world.size}] (got sizes {sizes}); "
                  "e.g. mpiexec -n 4 python labs/dp_rank0_bottleneck.py", file=sys.stderr)
        raise SystemExit(2)
    rows, shape = [], None
    for n in sizes:
        color = 0 if world.rank < n else MPI.UNDEFINED
        sub_mpi = world.mpi.Split(color, world.rank)  # collective over the world: all ranks call it
        if sub_mpi == MPI.COMM_NULL:
            continue
        comm = Communicator(sub_mpi)
        for strategy in STRATEGIES:
            got = measure(args, comm, strategy)
            shape = got["shape"]
            if comm.rank == 0:
                rows.append(measured_row(n, strategy, got["per_rank"], shape))
        sub_mpi.Free()
    if world.rank != 0:
        return
    project_shape = shape if args.project_params is None else dense(int(args.project_params))
    projection = projection_rows(args, project_shape)
    verdict, conclusion = conclude(rows, projection)
    kib = "{:.0f}"
    text = "\n".join([
        f"Rank 0 as a bottleneck: MLP(2-{args.hidden}-{args.hidden}-3) float32, "
        f"{shape.param_bytes} parameter bytes, SGD with momentum, {args.batch} samples per rank, "
        f"per step (mean of {args.steps})",
        "", "Measured (ledger, model.memory) beside predicted (stepcost): bytes and messages are sent + "
        "received; ratio = rank 0's bytes / the mean non-root rank's",
        common.format_table([dict(r, **{k + "_kib": r[k] / 1024 for k in PEAKS}) for r in rows], [
            ("size", "N", "{}"), ("strategy", "strategy", "{}"), ("rank0_bytes", "rank-0 B", "{:.0f}"),
            ("predicted_rank0_bytes", "pred", "{}"), ("rank1_bytes", "rank-1 B", "{:.0f}"),
            ("predicted_rank1_bytes", "pred", "{}"), ("rank0_over_other", "ratio", "{:.2f}"),
            ("rank0_messages", "rank-0 msgs", "{:.0f}"), ("rank1_messages", "rank-1 msgs", "{:.0f}"),
            ("rank0_peak_kib", "rank-0 peak KiB", kib), ("predicted_rank0_peak_kib", "pred", kib),
            ("rank1_peak_kib", "rank-1 peak KiB", kib), ("predicted_rank1_peak_kib", "pred", kib),
            ("ms_per_step", "ms/step", "{:.1f}")]),
        memory_note(rows),
        "", f"Predicted (stepcost, profile {args.profile}) for a model of {project_shape.param_bytes} bytes: "
        "bytes per step in units of the model",
        common.format_table(projection, [
            ("size", "N", "{}"), ("dp_rank0_in", "dp rank-0 in", "{:.2f}"),
            ("dp_rank0_out", "dp rank-0 out", "{:.2f}"), ("dp_other_out", "dp other out", "{:.2f}"),
            ("hub_rank0_in", "hub rank-0 in", "{:.2f}"), ("ddp_rank0_in", "ddp rank-0 in", "{:.3f}"),
            ("ddp_rank0_out", "ddp rank-0 out", "{:.3f}"),
            ("dp_rank0_peak_per_model", "dp rank-0 peak", "{:.0f}"),
            ("dp_seconds", "dp s", "{:.2e}"), ("hub_seconds", "hub s", "{:.2e}"),
            ("ddp_seconds", "ddp s", "{:.2e}")]),
        "", conclusion])
    results = {"lab": "dp_rank0_bottleneck", "world_size": world.size, "sizes": sizes,
               "config": {k: v for k, v in vars(args).items() if k != "json"},
               "parameter_bytes": shape.param_bytes, "projection_parameter_bytes": project_shape.param_bytes,
               "measured": rows, "projection": projection, "conclusion": conclusion, **verdict}
    common.finish(world, args, results, text)


if __name__ == "__main__":
    main()
