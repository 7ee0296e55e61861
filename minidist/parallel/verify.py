"""The wrap-time check that every rank built the same model, and the small text broadcast
it uses: names, shapes and dtypes of the parameters and the buffers are compared with rank
0's, and a difference raises the same RuntimeError on every rank, naming the first
parameter or buffer that differs (BatchNorm on one rank and LayerNorm on the others have
the same parameter names; only their buffers differ)."""
from __future__ import annotations

import json

import numpy as np

from ..comm import allreduce, broadcast


def _signature(module) -> list:
    """``[kind, name, shape, dtype]`` of every parameter, then of every buffer."""
    return ([["parameter", name, list(p.data.shape), str(p.data.dtype)] for name, p in module.named_parameters()]
            + [["buffer", name, list(b.data.shape), str(b.data.dtype)] for name, b in module.named_buffers()])


def _describe_mismatch(mine: list, root: list, rank: int) -> str:
    """'' when equal, else one sentence naming the first parameter or buffer that differs."""
    for i, (a, b) in enumerate(zip(mine, root)):
        if a[:2] != b[:2]:
            return (f"{a[0]} #{i} is {a[1]!r} on rank {rank} but {b[0]} {b[1]!r} on rank 0 "
                    f"(shapes {tuple(a[2])} and {tuple(b[2])})")
        if a[2] != b[2]:
            return (f"{a[0]} {a[1]!r} has shape {tuple(a[2])} on rank {rank} but shape "
                    f"{tuple(b[2])} on rank 0")
        if a[3] != b[3]:
            return (f"{a[0]} {a[1]!r} has dtype {a[3]} on rank {rank} but dtype {b[3]} on rank 0 "
                    f"(shape {tuple(a[2])})")
    if len(mine) != len(root):
        extra = mine[len(root):] or root[len(mine):]
        who = rank if len(mine) > len(root) else 0
        counts = [sum(1 for e in sig if e[0] == "buffer") for sig in (mine, root)]
        return (f"rank {rank} has {len(mine) - counts[0]} parameters and {counts[0]} buffers but rank 0 "
                f"has {len(root) - counts[1]} and {counts[1]}; the first extra one, on rank {who}, is "
                f"{extra[0][0]} {extra[0][1]!r} with shape {tuple(extra[0][2])}")
    return ""


def _text_to_int64(text: str) -> np.ndarray:
    raw = text.encode()
    raw += b"\0" * (-len(raw) % 8)
    return np.frombuffer(raw, dtype=np.int64).copy()


def broadcast_text(comm, text: str | None, root: int) -> str:
    """Broadcast a string from `root` as int64 words (length first)."""
    length = np.array([len(_text_to_int64(text)) if comm.rank == root else 0], dtype=np.int64)
    broadcast(comm, length, root)
    words = _text_to_int64(text) if comm.rank == root else np.empty(int(length[0]), np.int64)
    broadcast(comm, words, root)
    return words.tobytes().rstrip(b"\0").decode()


def verify_same_model(module, comm, who: str = "DDP") -> None:
    """Check that every rank's parameters and buffers have rank 0's names, shapes and
    dtypes; raise the same RuntimeError on every rank otherwise (naming the rank, the
    parameter or buffer and both shapes), so no rank is left waiting in a later
    collective. Phase ``"verify"``."""
    if comm is None or comm.size == 1:
        return
    mine = _signature(module)
    with comm.phase("verify"):
        root_sig = json.loads(broadcast_text(comm, json.dumps(mine) if comm.rank == 0 else None, 0))
        found = first_problem(comm, _describe_mismatch(mine, root_sig, comm.rank))
    if found is not None:
        raise RuntimeError(f"{who}: the model differs across ranks: {found[1]}. Every rank must build the "
                           f"same model (same layers, sizes and dtypes) before wrap()")


def first_problem(comm, problem: str):
    """``(rank, problem)`` of the lowest rank whose `problem` is not '', or None, on every rank."""
    first_bad = np.array([comm.rank if problem else comm.size], dtype=np.int64)
    allreduce(comm, first_bad, op="min", algorithm="ring")
    bad = int(first_bad[0])
    if bad == comm.size:
        return None
    return bad, broadcast_text(comm, problem if comm.rank == bad else None, bad)
