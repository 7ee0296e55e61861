"""DDP's options that are not the lesson, kept out of its core (ddp.py): checking the
options, each instance's span of tags, the fp16 hook, event recording, static_graph's
promise and bounded waits, and find_unused_parameters' used-map all-reduce. The core calls
each at one named point; with the option off, the call does nothing. docs/ddp.md has the
design notes.
"""
from __future__ import annotations

from weakref import WeakKeyDictionary

import numpy as np

from ..comm import ring_allreduce
from .buckets import check_same_order, instance_tag_base

COMM_HOOKS = (None, "fp16")
ALGORITHMS = ("ring", "recursive_doubling", "rabenseifner", "auto")
_instances = WeakKeyDictionary()  # Communicator -> DDP instances built on it so far


def check_options(algorithm, comm_hook, bucket_cap_mb, average) -> None:
    """Raise ValueError, before any collective, for an option DDP cannot run."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS} (got {algorithm!r})")
    if comm_hook not in COMM_HOOKS:
        raise ValueError(f"comm_hook must be one of {COMM_HOOKS} (got {comm_hook!r})")
    if comm_hook == "fp16" and algorithm != "ring":
        raise ValueError(f"comm_hook='fp16' needs algorithm='ring' (got algorithm={algorithm!r}): "
                         "of minidist.comm's all-reduces only the ring takes float16")
    if comm_hook == "fp16" and average == "samples":
        raise ValueError("comm_hook='fp16' averages over ranks, as PyTorch's fp16_compress_hook: each rank "
                         "divides its gradient by N before the cast, so the float16 sum cannot overflow where "
                         "the gradient does not (a sample-count weight and the count itself would, past "
                         "65504 and 2048); pass average='ranks' with it")
    if bucket_cap_mb <= 0:
        raise ValueError(f"bucket_cap_mb must be > 0 (got {bucket_cap_mb})")


def next_tag_base(comm) -> tuple[int, int]:
    """(this DDP's number on `comm`, the first tag of its buckets): instances are numbered
    in construction order, the same on every rank, so two wrapped models on one
    communicator ring their buckets on tags of their own."""
    number = _instances.get(comm, 0)
    _instances[comm] = number + 1
    return number, instance_tag_base(number, comm.tag_ub)


def to_wire(flat: np.ndarray, comm_hook, half: np.ndarray | None = None) -> np.ndarray:
    """What travels: `flat` itself, or (fp16 hook, PyTorch's fp16_compress_hook) its
    float16 copy, summed in float16 by the ring: written into `half` (the bucket's
    persistent float16 buffer) when given."""
    if comm_hook != "fp16":
        return flat
    half = np.empty(flat.size, np.float16) if half is None else half
    np.copyto(half, flat, casting="same_kind")
    return half


def from_wire(wire: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """The all-reduced bucket in the gradients' dtype, written back into `flat`."""
    if wire is not flat:
        np.copyto(flat, wire)
    return flat


class EventLog:
    """``record_events=True``: ``events``, a list of ``(kind, bucket)`` with kinds "ready",
    "launch", "done", and ``("backward_done", None)`` at ``step()``."""

    def __init__(self, enabled: bool):
        self.enabled, self.events = bool(enabled), []

    def __call__(self, kind: str, bucket) -> None:
        if self.enabled:
            self.events.append((kind, bucket))


class StaticGraph:
    """``static_graph=True``: the promise that every rank produces the same gradients in
    the same order at every iteration. The first synchronised step learns the order and
    checks it across ranks (`learn`); from then on a departing hook raises (`record`),
    and each launch waits until every older ring has done one step per later launch
    (`bound`), so the overlap is deterministic."""

    def __init__(self, enabled: bool, names: list, comm):
        self.enabled, self.names, self.comm = bool(enabled), names, comm
        self.order = None  # the first iteration's firing order, once checked
        self.fired = []

    @property
    def bounded(self) -> bool:
        return self.order is not None

    def record(self, index: int) -> None:
        """Parameter `index`'s hook fired; raise if that breaks the learnt order."""
        position, order = len(self.fired), self.order
        self.fired.append(index)
        if order is not None and (position >= len(order) or order[position] != index):
            expected = f"{self.names[order[position]]!r}" if position < len(order) else "no more gradients"
            raise RuntimeError(f"DDP(static_graph=True): on rank {self.comm.rank}, gradient #{position} of "
                               f"this iteration is {self.names[index]!r}, but the first iteration had "
                               f"{expected} there; static_graph promises the same gradients in the same "
                               "order at every iteration: wrap with static_graph=False (the default)")

    def learn(self, synchronised: bool) -> None:
        """At ``step()``: the first synchronised backward's order, checked on every rank
        (raises on every rank if they differ), becomes the promise."""
        fired, self.fired = self.fired, []
        if self.enabled and self.order is None and synchronised:
            check_same_order(self.comm, fired, self.names)
            if fired:  # the same on every rank once the check passed
                self.order = fired

    def bound(self, buckets, launched: int, log) -> None:
        """Bucket j has seen ``launched - 1 - j`` later launches: wait until its ring has
        completed that many steps (a target every rank shares)."""
        for b in buckets[:launched]:
            if b.op is not None and not b.op.done and b.op.advance_to(launched - 1 - b.index):
                log("done", b.index)


def globally_unused(comm, params) -> list:
    """``find_unused_parameters=True``: the parameters no rank has a gradient for, from one
    ring all-reduce of one int64 per parameter (phase ``"unused-bitmap"``, PyTorch's
    used-map all-reduce); their ``.grad`` stays None, so the optimizer skips them."""
    used = np.array([p.grad is not None for p in params], dtype=np.int64)
    if comm.size > 1:
        with comm.phase("unused-bitmap"):
            ring_allreduce(comm, used, "sum")
    return [p for p, count in zip(params, used) if count == 0]
