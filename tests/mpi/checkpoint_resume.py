"""Worker: checkpoints under wrapped models. ``checkpoint_resume.py first DIR`` trains
each strategy 6 steps (digest of every parameter, buffer and optimizer-state byte), then
3 steps saved to DIR/<strategy>.npz; it also checks that a wrapped model's
load_state_dict names the rank whose replica differs, and that a checkpoint missing on
one rank raises the same error everywhere. ``checkpoint_resume.py resume DIR`` (a new
job) builds each model from another seed, loads, trains steps 3..5 and emits the digest.
"""
import hashlib
import sys

import numpy as np

from minidist.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidist.comm import Communicator
from minidist.parallel import local_shard, wrap
from minidist.parallel.drift import ReplicaDriftError

from checkpoint_helpers import build, make_optimizer, state_bytes, train
from mpi_util import emit

STRATEGIES = ("ddp", "ddp-static", "dp", "hub")


def job(comm, strategy, seed=0):
    options = {"static_graph": True} if strategy == "ddp-static" else {}
    model = wrap(build(seed=seed), strategy.split("-")[0], comm, **options)
    return model, make_optimizer(model.parameters())


def digest(model, opt):
    return hashlib.sha256(state_bytes(model.module, opt)).hexdigest()


def first(comm, folder):
    out, shard = {}, lambda x, y: local_shard((x, y), comm)
    for strategy in STRATEGIES:
        model, opt = job(comm, strategy)
        train(model, opt, 0, 6, shard)
        out[strategy] = digest(model, opt)
        out[f"{strategy}_graph"] = getattr(getattr(model, "_graph", None), "order", None)
        model, opt = job(comm, strategy)
        train(model, opt, 0, 3, shard)
        save_checkpoint(f"{folder}/{strategy}.npz", model, opt, step=3)
    out["replica"] = replica_case(comm)
    out["missing"] = missing_case(comm, folder)
    return out


def replica_case(comm):
    model, _ = job(comm, "ddp")
    state = model.state_dict()
    if comm.rank == 1:
        state["0.weight"] = state["0.weight"] + 1.0
    try:
        model.load_state_dict(state)
    except ReplicaDriftError as exc:
        return {"raised": True, "ranks": exc.ranks, "message": str(exc)}
    return {"raised": False}


def missing_case(comm, folder):
    model, opt = job(comm, "ddp")
    path = f"{folder}/ddp.npz" if comm.rank == 0 else f"{folder}/absent.npz"
    try:
        load_checkpoint(path, model, opt)
    except CheckpointError as exc:
        return {"raised": True, "message": str(exc)}
    return {"raised": False}


def resume(comm, folder):
    out, shard = {}, lambda x, y: local_shard((x, y), comm)
    for strategy in STRATEGIES:
        model, opt = job(comm, strategy, seed=7)
        info = load_checkpoint(f"{folder}/{strategy}.npz", model, opt)
        out[f"{strategy}_graph"] = getattr(getattr(model, "_graph", None), "order", None)  # restored, not relearnt
        train(model, opt, info["step"], 6, shard)
        out[strategy] = digest(model, opt)
        out[f"{strategy}_steps"] = model.steps
    return out


if __name__ == "__main__":
    mode, folder = sys.argv[1], sys.argv[2]
    comm = Communicator()
    emit(first(comm, folder) if mode == "first" else resume(comm, folder))
