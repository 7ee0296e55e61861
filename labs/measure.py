"""Measure a strategy's training steps on a communicator, per rank, from the library's
own reports: the ledger (bytes and messages, per phase) and the wrapped model's memory
report (`model.memory`: parameters, gradients, optimizer state, communication peak).

Every rank draws the same global batch of N b samples each step and takes its
``np.array_split`` rows, so "dp-root" (``dp`` with ``loss_on_root=True``: outputs gathered
to rank 0, the loss there, output gradients scattered back) runs the same samples as the
others. Rank 0 gathers every rank's numbers (phase "lab", outside the strategy's).
"""
from __future__ import annotations

from time import perf_counter

import numpy as np

import common
from minidist.comm import gather_to_root
from minidist.optim import SGD, Adam
from minidist.parallel import wrap
from minidist.parallel.trainer import train_step

TRAFFIC = ("bytes_sent", "bytes_received", "messages_sent", "messages_received")
MEMORY = ("parameters", "gradients", "optimizer", "comm_buffers", "comm_peak", "peak")
PHASES = ("grad-gather", "grad-reduce", "grad-broadcast", "param-broadcast",
          "grad-allreduce", "buffer-broadcast", "output-gather", "output-grad-scatter")
FIELDS = TRAFFIC + MEMORY + ("seconds",) + tuple(f"phase:{p}" for p in PHASES)


def wrap_strategy(net, strategy: str, comm):
    if strategy == "dp-root":
        return wrap(net, "dp", comm, loss_on_root=True)
    return wrap(net, strategy, comm)


def run_steps(comm, strategy, net, data, *, batch: int, steps: int, seed: int, lr: float = 0.01,
              optimizer: str = "sgd") -> list[dict] | None:
    """Train `steps` steps; rank 0 gets one dict of FIELDS per rank (per step; memory as
    the report's peak), the others None."""
    X, y = data
    model = wrap_strategy(net, strategy, comm)
    opt = SGD(model.parameters(), lr=lr, momentum=0.9) if optimizer == "sgd" else Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    comm.ledger.reset()  # the steps only, not wrap's initial broadcast
    t0 = perf_counter()
    for _ in range(steps):
        idx = rng.choice(len(X), batch * comm.size, replace=len(X) < batch * comm.size)
        xs, ys = np.array_split(X[idx], comm.size)[comm.rank], np.array_split(y[idx], comm.size)[comm.rank]
        target = (y[idx] if comm.rank == 0 else None) if strategy == "dp-root" else ys
        train_step(model, opt, np.ascontiguousarray(xs), target)
    seconds = (perf_counter() - t0) / steps
    totals = comm.ledger.totals()
    memory = model.memory.as_dict()
    mine = np.array([totals[k] / steps for k in TRAFFIC] + [memory[k] for k in MEMORY] + [seconds]
                    + [_phase_bytes(comm, p) / steps for p in PHASES], dtype=np.float64)
    with comm.phase("lab"):
        everyone = gather_to_root(comm, mine)
    if comm.rank != 0:
        return None
    return [dict(zip(FIELDS, row.tolist())) for row in everyone]


def _phase_bytes(comm, phase) -> float:
    t = comm.ledger.totals(phase)
    return t["bytes_sent"] + t["bytes_received"]


def seeds_loop(args, comm, strategy, make_net, make_data, *, batch, steps, **options) -> list | None:
    """`run_steps` for every seed of `args`; rank 0 gets ``[per_rank lists]``, one per seed."""
    out = []
    for seed in args.seed_list:
        got = run_steps(comm, strategy, make_net(seed), make_data(seed), batch=batch, steps=steps,
                        seed=seed, **options)
        out.append(got)
    return out if comm.rank == 0 else None


def summary(per_seed: list, size: int, strategy: str) -> dict:
    """One table row from every seed's per-rank numbers: rank 0's and the busiest other
    rank's traffic (bytes sent + received per step), memory, and the step time (the
    slowest rank's, mean and spread over the seeds)."""
    first = per_seed[0]
    traffic = [r["bytes_sent"] + r["bytes_received"] for r in first]
    row = {"size": size, "strategy": strategy, "rank0_bytes": traffic[0],
           "other_bytes": max(traffic[1:]) if size > 1 else 0.0, "rank1_bytes": traffic[1] if size > 1 else 0.0,
           "rank0_messages": first[0]["messages_sent"] + first[0]["messages_received"],
           "ms": [1e3 * max(r["seconds"] for r in ranks) for ranks in per_seed],
           "rank0_phases": {p: first[0][f"phase:{p}"] for p in PHASES if first[0][f"phase:{p}"]},
           "other_phases": {p: first[1][f"phase:{p}"] for p in PHASES if size > 1 and first[1][f"phase:{p}"]}}
    for k in MEMORY:
        row[f"rank0_{k}"] = first[0][k]
        row[f"other_{k}"] = max(r[k] for r in first[1:]) if size > 1 else 0.0
    row["updating_ranks"] = sum(r["optimizer"] > 0 for r in first)  # ranks holding optimizer state
    row["optimizer_total"] = sum(r["optimizer"] for r in first)
    row["ms_mean"], row["ms_spread"] = common.mean_spread(row["ms"])
    row["same_bytes_every_seed"] = all(
        [r["bytes_sent"] for r in ranks] == [r["bytes_sent"] for r in first] for ranks in per_seed)
    return row


def parse_options(p, argv, project: list[int]):
    """Add labs 06 and 08's options to parser `p` and parse: --steps, --hidden, --batch
    (an MLP trained a few steps per N), --project, --profile, --project-params."""
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256, help="MLP width (the model is ~hidden^2 floats)")
    p.add_argument("--batch", type=int, default=16, help="samples per rank per step")
    p.add_argument("--project", type=common.int_list, default=project, help="rank counts to project to")
    p.add_argument("--profile", choices=sorted(common.PROFILES), default="ib-hdr")
    p.add_argument("--project-params", type=float, default=None,
                   help="project a dense float32 model of this many parameters (default: the lab's MLP)")
    args = common.parse(p, argv)
    if args.quick:
        args.steps, args.hidden, args.batch = 2, 32, 8
    return args


def world(lab: str):
    """COMM_WORLD's Communicator; with one rank, say how to launch `lab` and exit 2."""
    import sys

    from minidist.comm import Communicator
    comm = Communicator()
    if comm.size < 2:
        print(f"this lab needs ranks: mpiexec -n 4 python labs/{lab}", file=sys.stderr)
        raise SystemExit(2)
    return comm


def projection_shape(args, net):
    """The model to project: `net`'s shape, or a dense float32 one of --project-params."""
    return common.describe(net) if args.project_params is None else common.dense(int(args.project_params))


def predicted(cost: dict) -> dict:
    """A `predict_step` result as a row: rank 0's and rank 1's bytes (sent + received) and
    peak memory, and the step's seconds."""
    return {"seconds": cost["seconds"],
            **{f"{who}_bytes": cost[key]["bytes_sent"] + cost[key]["bytes_received"]
               for who, key in (("rank0", "rank0"), ("other", "other"))},
            "rank0_peak": cost["memory"]["rank0"]["peak"], "other_peak": cost["memory"]["other"]["peak"]}


def measure_and_project(args, lab: str, measured_rows, projected_rows, net):
    """(world, measured rows, projected rows) of a lab measuring on the ranks of this
    launch (rows on rank 0; None elsewhere) and projecting `net` or --project-params."""
    comm = world(lab)
    measured = measured_rows(args, comm)
    if comm.rank != 0:
        return comm, None, None
    return comm, measured, projected_rows(args, projection_shape(args, net))
