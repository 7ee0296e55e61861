"""Lab 9: DDP synchronises gradients by ring all-reduce, and every worker updates itself;
each rank sends 2(N-1)/N of the gradient bytes.

What it does.

1. The schedule for N = 4 (`--show`), step by step, from the library's own ring schedule
   (`minidist.comm.ring.send_chunk` / `recv_chunk`): at each step which chunk every rank
   sends to its right neighbour, and the partial sum it carries (the ranks whose
   contributions it holds). Replayed in NumPy with the ring's order of additions, it must
   give every rank the full sum on every chunk.
2. On the ranks of this launch: the library's `ring_allreduce` of K seeded float32
   vectors must equal that replay bit for bit (for N = the mpiexec -n).
3. Bytes per rank: for each N from 2 to the mpiexec -n (the first N ranks), the ledger's
   bytes sent by every rank in one all-reduce of a `--elements` gradient, over the
   gradient's bytes, beside 2(N-1)/N and the closed form (`message_counts`), which then
   predicts it to 1,024 ranks. DDP's own step is the same ring (lab 6 measures it).

    mpiexec -n 5 python labs/09_ring_allreduce.py          # measures N = 2..5
    mpiexec -n 2 python labs/09_ring_allreduce.py --quick --out /tmp/lab9
"""
from __future__ import annotations

import common  # first: it limits BLAS threads before NumPy loads

import numpy as np

from minidist.comm import Communicator, ring_allreduce
from minidist.comm.ring import recv_chunk, send_chunk

CLAIM = ("DDP synchronises gradients by ring all-reduce and every worker updates itself; bytes per rank "
         "= 2(N-1)/N of the gradient bytes.")


def parse_args(argv=None):
    p = common.lab_parser(__doc__)
    p.add_argument("--show", type=int, default=4, help="N of the printed and drawn schedule")
    p.add_argument("--elements", type=int, default=1 << 20, help="gradient elements (float32) for the bytes")
    p.add_argument("--project", type=common.int_list, default=[2, 3, 4, 5, 8, 16, 64, 256, 1024])
    args = common.parse(p, argv)
    if args.quick:
        args.elements = 6000
    return args


def schedule(n: int) -> list[dict]:
    """Every step of the ring on n ranks: who sends which chunk, carrying which ranks'
    contributions, and what the receiver holds after it."""
    holds = [[{r} for _ in range(n)] for r in range(n)]  # holds[rank][chunk]: contributions summed
    steps = []
    for s in range(2 * (n - 1)):
        phase = "reduce-scatter" if s < n - 1 else "all-gather"
        moves = []
        for r in range(n):
            c, dest = send_chunk(r, n, s), (r + 1) % n
            assert recv_chunk(dest, n, s) == c  # the receiver expects exactly this chunk
            moves.append({"from": r, "to": dest, "chunk": c, "carries": sorted(holds[r][c])})
        for m in moves:  # all Sendrecvs of a step happen together
            mine = holds[m["to"]][m["chunk"]]
            holds[m["to"]][m["chunk"]] = set(m["carries"]) | mine if phase == "reduce-scatter" else set(m["carries"])
        steps.append({"step": s, "phase": phase, "moves": moves,
                      "after": [[sorted(h) for h in holds[r]] for r in range(n)]})
    return steps


def replay(vectors: list[np.ndarray]) -> list[np.ndarray]:
    """The ring in NumPy: the same schedule and order of additions (partial from the left
    + own), so the result must equal `ring_allreduce`'s bit for bit."""
    n = len(vectors)
    bufs = [v.copy() for v in vectors]
    bounds = np.cumsum([0] + [len(c) for c in np.array_split(vectors[0], n)])
    for s in range(2 * (n - 1)):
        sent = [bufs[r][bounds[send_chunk(r, n, s)]:bounds[send_chunk(r, n, s) + 1]].copy() for r in range(n)]
        for r in range(n):
            dest, c = (r + 1) % n, send_chunk(r, n, s)
            part = bufs[dest][bounds[c]:bounds[c + 1]]
            part[...] = sent[r] + part if s < n - 1 else sent[r]
    return bufs


def check_library(args, comm) -> list[float]:
    """Per seed: max |ring_allreduce (this launch) - replay| on any rank (0 = bit-identical)."""
    errors = []
    for seed in args.seed_list:
        rng = np.random.default_rng(seed)
        vectors = [rng.standard_normal(1001).astype(np.float32) for _ in range(comm.size)]
        got = ring_allreduce(comm, vectors[comm.rank].copy())
        diff = float(np.abs(got - replay(vectors)[comm.rank]).max())
        errors.append(common.max_over_ranks(comm, diff))
    return errors


def measure_bytes(args, world) -> list[dict]:
    rows = []
    for n, comm in common.sub_communicators(world, range(2, world.size + 1)):
        x = np.ones(args.elements, np.float32)
        comm.ledger.reset()
        ring_allreduce(comm, x)
        t = comm.ledger.totals()
        mine = np.array([t["bytes_sent"], t["bytes_received"], t["messages_sent"]], dtype=np.float64)
        from minidist.comm import gather_to_root
        with comm.phase("lab"):
            everyone = gather_to_root(comm, mine)
        if comm.rank == 0:
            closed = [common.message_counts("ring_allreduce", n, r, args.elements, 4)["bytes_sent"] for r in range(n)]
            rows.append({"size": n, "sent": everyone[:, 0].tolist(), "messages": everyone[:, 2].tolist(),
                         "closed_form": closed, "fraction": (everyone[:, 0] / (4 * args.elements)).tolist(),
                         "theory": 2 * (n - 1) / n})
    return rows


def projected(args) -> list[dict]:
    return [{"size": n, "fraction": common.message_counts("ring_allreduce", n, 0, args.elements, 4)["bytes_sent"]
             / (4 * args.elements), "theory": 2 * (n - 1) / n} for n in args.project]


def updating_ranks(comm) -> int | None:
    """Ranks whose memory report holds optimizer state after one ddp step (rank 0)."""
    import measure
    from minidist.data import spirals
    from minidist.parallel import MLP

    per_rank = measure.run_steps(comm, "ddp", MLP(2, 8, 3, rng=0), spirals(32, 3, seed=0), batch=4, steps=1, seed=0)
    return None if per_rank is None else sum(r["optimizer"] > 0 for r in per_rank)


def conclude(steps, errors, rows, proj, show, updating=None, size=1) -> dict:
    final = steps[-1]["after"]
    everyone = all(h == list(range(show)) for rank in final for h in rank)
    checks = [
        common.Check(f"after 2(N-1) = {len(steps)} steps every rank holds every chunk summed over all {show} ranks",
                     everyone, f"final holdings {'all complete' if everyone else final}"),
        common.Check("the library's ring_allreduce equals the replayed schedule bit for bit", max(errors) == 0.0,
                     f"max |difference| over {len(errors)} seeds {max(errors):.1e}")]
    if updating is not None:
        checks.append(common.Check("under ddp every rank updates itself (holds optimizer state)", updating == size,
                                   f"{updating} of {size} ranks hold SGD momentum after a ddp step (memory report)"))
    for r in rows:
        exact = r["sent"] == r["closed_form"]
        worst = max(abs(f - r["theory"]) for f in r["fraction"])
        checks.append(common.Check(
            "every rank sends 2(N-1)/N of the gradient bytes (ledger = closed form)", exact and worst < 1e-3,
            f"sent / gradient bytes per rank {', '.join(f'{f:.4f}' for f in r['fraction'])}; 2(N-1)/N = "
            f"{r['theory']:.4f}; {r['messages'][0]:.0f} messages each", when=f"N={r['size']} (measured)"))
    worst = max(abs(p["fraction"] - p["theory"]) for p in proj)
    checks.append(common.Check("predicted to 1,024 ranks: 2(N-1)/N, below 2 at every N", worst < 1e-3 and all(
        p["fraction"] < 2 for p in proj), f"N={proj[-1]['size']}: {proj[-1]['fraction']:.4f}; largest gap to "
        f"2(N-1)/N {worst:.1e} (uneven chunks)"))
    return common.verdict(checks)


def schedule_text(steps) -> str:
    lines = []
    for st in steps:
        moves = "   ".join(f"r{m['from']}->r{m['to']}: c{m['chunk']}={'+'.join(map(str, m['carries']))}"
                           for m in st["moves"])
        lines.append(f"step {st['step']} ({st['phase']:>14}): {moves}")
    return "\n".join(lines)


def draw(steps, rows, proj, show):
    from plots import lines

    def fig(figure):
        figure.set_size_inches(11, 4.5)
        ax = figure.add_subplot(1, 2, 1)
        colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
        for st in steps:
            y = -st["step"]
            for m in st["moves"]:
                colour = colours[m["chunk"] % len(colours)]
                ax.annotate("", xy=(m["to"] if m["to"] else show, y - 0.35), xytext=(m["from"], y),
                            arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2})
                ax.text(m["from"] + 0.05, y + 0.08, f"c{m['chunk']}:{'+'.join(map(str, m['carries']))}",
                        fontsize=6, color=colour)
        ax.axhline(-(show - 1) + 0.5, color="gray", lw=0.8, ls=":")
        ax.set_xticks(range(show + 1))
        ax.set_xticklabels([f"r{r}" for r in range(show)] + ["r0"])
        ax.set_yticks([-s["step"] for s in steps])
        ax.set_yticklabels([f"{s['step']} {'RS' if s['phase'] == 'reduce-scatter' else 'AG'}" for s in steps])
        ax.set_xlabel("rank (arrow: chunk sent right, with its partial sum)")
        ax.set_ylabel("step (RS reduce-scatter, AG all-gather)")
        ax.set_title(f"ring all-reduce, N={show}", fontsize=9)
        ax = figure.add_subplot(1, 2, 2)
        lines(ax, {"ddp predicted": ([p["size"] for p in proj], [p["fraction"] for p in proj]),
                   "measured, rank 0": ([r["size"] for r in rows], [r["fraction"][0] for r in rows])},
              "ranks N", "bytes sent per rank / gradient bytes", "2(N-1)/N", logx=2,
              linestyles={"measured, rank 0": "none"})
    return fig


def main(argv=None):
    args = parse_args(argv)
    world = Communicator()
    errors = check_library(args, world)
    rows = measure_bytes(args, world)
    updating = updating_ranks(world)
    if world.rank != 0:
        return
    steps, proj = schedule(args.show), projected(args)
    result = conclude(steps, errors, rows, proj, args.show, updating, world.size)
    text = "\n".join([
        f"Lab 9: ring all-reduce. Schedule for N={args.show} (library's send_chunk/recv_chunk): "
        "rX->rY: cK=a+b means rank X sends chunk K, holding the sum of ranks a, b, to rank Y", "",
        schedule_text(steps), "",
        f"On this launch (N={world.size}): ring_allreduce vs the replay, max |difference| per seed: "
        + ", ".join(f"{e:.1e}" for e in errors), "",
        f"Bytes sent per rank for {args.elements} float32 elements ({4 * args.elements} B), measured (ledger)",
        common.format_table([dict(r, f=", ".join(f"{v:.4f}" for v in r["fraction"])) for r in rows], [
            ("size", "N", "{}"), ("f", "sent / gradient bytes, ranks 0..N-1", "{}"), ("theory", "2(N-1)/N", "{:.4f}")]),
        "", "Predicted (closed form) for rank 0",
        common.format_table(proj, [("size", "N", "{}"), ("fraction", "sent / gradient bytes", "{:.4f}"),
                                   ("theory", "2(N-1)/N", "{:.4f}")])])
    common.finish(world, args, {"lab": "09_ring_allreduce", "world_size": world.size, "schedule": steps,
                                "library_vs_replay": errors, "measured": rows, "projected": proj,
                                "verdict": result}, text, {"09_ring_allreduce.png": draw(steps, rows, proj, args.show)})


if __name__ == "__main__":
    main()
