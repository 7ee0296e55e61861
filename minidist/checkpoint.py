"""Checkpoints: `save_checkpoint` and `load_checkpoint`, so a resumed run repeats the
uninterrupted one bit for bit.

A checkpoint is one ``.npz`` (loaded with ``allow_pickle=False``: nothing in it is ever
executed) holding every array, plus one JSON string (key ``__minidist__``) with the rest:
the step, the strategy's state, the RNG states, the optimizer's numbers and `extra`.
Rank 0 writes it atomically (`minidist.atomic`); every rank reads the same file, checks
keys, shapes and dtypes against its model and optimizer before changing anything, and,
under a wrapped model, all ranks raise the same error or none does. The encoding lives in
`minidist.checkpoint_format`; docs/checkpoints.md has the details.
"""
from __future__ import annotations

import os

import numpy as np

from . import atomic
from .checkpoint_format import (CheckpointError, decode_extra, encode, read_file, restore_rngs,
                                verify)

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]
PHASE = "checkpoint"


def _comm(model):
    """The wrapped model's communicator, or None (a plain module, "local", one rank)."""
    comm = getattr(model, "comm", None)
    return comm if comm is not None and comm.size > 1 else None


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"save_checkpoint: step must be an int >= 0, the number of completed steps "
                         f"(got step={step!r})")
    return int(step)


def save_checkpoint(path, model, optimizer, *, step, extra=None) -> str:
    """Write `model` (a module or a wrapped model), `optimizer` (or None), the step count
    `step` and `extra` to `path` (``.npz``). A collective under a wrapped model: every rank
    calls it, rank 0 writes, and every rank returns once the file is complete (or raises
    rank 0's error). `extra` maps names to JSON values, NumPy arrays, ``np.random.Generator``s
    and samplers (anything with ``epoch`` and ``set_epoch``). Returns `path`."""
    path = os.fspath(path)
    step = _check_step(step)
    _, arrays = encode(model, optimizer, step, extra)  # checks extra before any I/O
    comm = _comm(model)
    problem = ""
    if comm is None or comm.rank == 0:
        try:
            atomic.savez(path, **arrays)
        except OSError as exc:
            problem = f"rank 0 could not write checkpoint {path!r}: {exc}"
    _agree(comm, problem)
    return path


def load_checkpoint(path, model, optimizer, *, extra=None) -> dict:
    """Restore `model`, `optimizer` (or None) and the RNG states from `path`; every rank
    reads the same file. Generators and samplers passed in `extra` (same names as at save)
    are restored in place. Returns ``{"step": int, "extra": {...}}`` (generators rebuilt,
    arrays and JSON values as saved). Raises `CheckpointError`, naming the file and what
    does not match, before anything is changed."""
    path = os.fspath(path)
    comm = _comm(model)
    problem, loaded = "", None
    try:
        loaded = read_file(path)
        verify(path, loaded, model, optimizer, extra)
    except CheckpointError as exc:
        problem = str(exc)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        problem = f"{path!r} has malformed minidist metadata ({type(exc).__name__}: {exc}); nothing was loaded"
    _agree(comm, problem)
    meta, arrays = loaded
    module = getattr(model, "module", model)
    state = {key: arrays[f"model/{key}"] for key in meta["model"]}
    if hasattr(model, "module"):
        model.load_state_dict(state)  # wrapped: also compares the replicas' hashes
    else:
        module.load_state_dict(state)
    if optimizer is not None:
        _load_optimizer(model, optimizer, meta["optimizer"], arrays)
    _load_strategy(model, meta.get("strategy"))
    restore_rngs(module, meta["rng"])
    return {"step": int(meta["step"]), "extra": decode_extra(meta["extra"], arrays, extra)}


def _agree(comm, problem: str) -> None:
    """Raise `problem` (as CheckpointError) on every rank if any rank has one."""
    if comm is not None:
        from .parallel.base import first_problem

        with comm.phase(PHASE):
            found = first_problem(comm, problem)
        if found is not None:
            raise CheckpointError(found[1] if found[0] == 0 else f"on rank {found[0]}: {found[1]}")
    elif problem:
        raise CheckpointError(problem)


def _load_optimizer(model, optimizer, saved: dict, arrays) -> None:
    state = {}
    for index, entry in saved["state"].items():
        values = dict(entry["numbers"])
        values.update({name: arrays[f"optim/{index}/{name}"] for name in entry["arrays"]})
        state[int(index)] = values
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in saved["param_groups"]]
    comm = getattr(model, "comm", None)
    if getattr(model, "strategy", None) == "dp" and comm is not None and comm.rank != 0:
        state = {}  # dp keeps optimizer state on rank 0 only, as an uninterrupted run does
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _load_strategy(model, saved) -> None:
    if saved is None or getattr(model, "strategy", None) != saved["strategy"]:
        return  # a plain module, or another strategy: nothing of the strategy's to restore
    model.load_strategy_state(saved)
