"""`ParallelModel`: what every strategy's wrapped model shares.

It is called like the model, exposes the model's parameters (so an optimizer built on
``model.parameters()`` updates the real ones), counts the samples each rank sees, and runs
one step as ``step(optimizer)`` = communication before the update, the update (skipped
when the step's status says so), communication after it, then the optional replica check
and the memory report. The status (global sample count, number of ranks with non-finite
gradients) rides in the gradient messages (tail.py); `_judge` makes it an error or a skip.

Also here: the wrap-time checks and broadcasts the distributed strategies share
(`verify_same_model`, `broadcast_tensors`).
"""
from __future__ import annotations

import json

import numpy as np

from ..autograd import Tensor
from ..autograd.function import is_grad_enabled
from ..comm import allreduce, broadcast
from .drift import ReplicaDriftError, check_replicas
from .flat import layouts_by_dtype
from .memory import ScratchMeter, measure, reset_ledger_peak
from .tail import NONFINITE, StatusTail, judge, verdict

AVERAGES = ("samples", "ranks")


class ParallelModel:
    """Base of the wrapped models (see `minidist.parallel.wrap`).

    Attributes:
        module: the wrapped model (its Parameters are the ones updated).
        comm: the Communicator (None for "local").
        strategy (str): "local", "dp", "hub" or "ddp".
        steps (int): completed `step` calls (skipped ones included).
        skipped_steps (int): steps skipped for non-finite gradients (``nonfinite="skip"``).
        memory (MemoryReport | None): this rank's memory after the last step.
    """

    strategy = "?"

    def __init__(self, module, comm, *, average: str = "samples", check_replicas: bool = False,
                 nonfinite: str = "raise"):
        if not hasattr(module, "parameters") or not callable(module):
            raise TypeError(f"wrap() needs a minidist.nn.Module (got {type(module).__name__})")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES} (got {average!r}): 'samples' weights "
                             "each rank's gradient by its sample count, 'ranks' divides by the number of ranks")
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE} (got {nonfinite!r}): 'raise' stops at a "
                             "NaN or Inf gradient on any rank, 'skip' skips that step, 'ignore' lets it through")
        self.module, self.comm = module, comm
        self.average, self.nonfinite = average, nonfinite
        self.check_replicas = bool(check_replicas)
        self.steps = self.skipped_steps = 0
        self._skip = False  # this step's update is skipped (set by _judge)
        self._locally_finite = True  # this rank's gradients of the current step
        self.memory = None
        self._samples = 0  # samples this rank has seen in gradient-recording forwards since the last step
        self._scratch = ScratchMeter()

    # ---- the module's interface ----------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x, *args, **kwargs):
        self._count_samples(x)
        return self.module(x, *args, **kwargs)

    def parameters(self):
        return self.module.parameters()

    def named_parameters(self):
        return self.module.named_parameters()

    def buffers(self):
        return self.module.buffers()

    def named_buffers(self):
        return self.module.named_buffers()

    def modules(self):
        return self.module.modules()

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict: bool = True):
        """A collective: every rank loads the same state, then the parameter hashes are compared
        (`ReplicaDriftError` on every rank, naming the ranks that differ from rank 0)."""
        result = self.module.load_state_dict(state_dict, strict)
        try:
            check_replicas(self.module, self.comm)
        except ReplicaDriftError as exc:
            raise ReplicaDriftError(f"load_state_dict: after loading, the parameters of rank(s) {exc.ranks} "
                                    "differ from rank 0's: every rank must load the same state (e.g. "
                                    "minidist.load_checkpoint(path, model, optimizer) on every rank)",
                                    None, exc.ranks) from None
        return result

    def train(self, mode: bool = True):
        self.module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    @property
    def training(self) -> bool:
        return self.module.training

    def zero_grad(self) -> None:
        self.module.zero_grad()

    def __repr__(self):
        return f"{type(self).__name__}(strategy={self.strategy!r},\n  module={self.module!r})"

    # ---- the step ------------------------------------------------------------------------
    def step(self, optimizer) -> None:
        """Finish this step's communication and update the parameters with `optimizer`
        (built on ``model.parameters()``)."""
        self._skip = False
        self._before_update(optimizer)
        if not self._skip:
            self._update(optimizer)
        self._after_update(optimizer)
        self._samples = 0
        self.steps += 1
        if self.check_replicas:
            check_replicas(self.module, self.comm, step=self.steps)
        self.memory = measure(self.module, optimizer, comm=self.comm,
                              comm_buffers=self._persistent_comm_bytes(),
                              scratch_peak=self._scratch.peak,
                              previous_peak=self.memory.peak if self.memory else 0)
        self._restart_peaks()  # the next step's forward and backward count towards its peak

    def _restart_peaks(self) -> None:
        """Start measuring the scratch peaks afresh (end of wrap, end of each step)."""
        reset_ledger_peak(self.comm)
        self._scratch.reset_peak()

    def _before_update(self, optimizer) -> None:
        """Communication that must finish before the update (gradient averaging)."""

    def _update(self, optimizer) -> None:
        optimizer.step()

    def _after_update(self, optimizer) -> None:
        """Communication after the update (dp: the parameter broadcast)."""

    def _persistent_comm_bytes(self) -> int:
        return 0

    # ---- sample counting -------------------------------------------------------------------
    def _count_samples(self, x) -> None:
        """Count `x`'s rows as training samples: only in training mode with gradients
        enabled (an eval-mode forward, e.g. validation, is not part of the step's batch)."""
        if self.module.training and is_grad_enabled() and x is not None:
            self._samples += int(np.shape(x.data if isinstance(x, Tensor) else x)[0])

    def _status_tail(self, counts: bool | None = None) -> StatusTail:
        """The tail this strategy appends to its first gradient message: the sample count
        (``average="samples"``, unless `counts` says otherwise) and the non-finite flag
        (unless ``nonfinite="ignore"``)."""
        counts = self.average == "samples" if counts is None else counts
        return StatusTail(counts, self.nonfinite != "ignore")

    def _write_tail(self, tail: StatusTail, out: np.ndarray, finite: bool) -> None:
        """This rank's tail (its sample count, its flag) into `out`; `finite` is kept for
        naming the culprits should the step have any."""
        self._locally_finite = finite
        tail.encode(out, self._samples, 0 if finite else 1)

    def _verdict(self, total: float | None, nonfinite: int) -> str | None:
        """None when the step may update; else "no-samples", "skip" or "nonfinite"."""
        return verdict(total, nonfinite, self.nonfinite)

    def _judge(self, total: float | None, nonfinite: int) -> None:
        """Act on the step's summed status, the same on every rank (`tail.judge`): raise,
        or mark the update skipped."""
        who = self.strategy if self.strategy != "ddp" else "DDP"
        if judge(who, self.steps + 1, self.comm, total, nonfinite, self.nonfinite, self._locally_finite):
            self._skip = True
            self.skipped_steps += 1

    def _grad_layouts(self):
        return layouts_by_dtype([p for p in self.module.parameters() if p.requires_grad])

    def _broadcast_buffers(self, algorithm: str = "linear") -> None:
        """Rank 0's buffers (BatchNorm statistics) to every rank, phase ``"buffer-broadcast"``;
        nothing when the model has none."""
        buffers = list(self.module.buffers())
        if buffers and self.comm.size > 1:
            with self.comm.phase("buffer-broadcast"):
                broadcast_tensors(self.comm, buffers, 0, algorithm, self._scratch)


# ---- wrap-time checks and broadcasts ------------------------------------------------------------
def _signature(module) -> list:
    return [[name, list(p.data.shape), str(p.data.dtype)] for name, p in module.named_parameters()]


def _describe_mismatch(mine: list, root: list, rank: int) -> str:
    """'' when equal, else one sentence naming the first parameter that differs."""
    for i, (a, b) in enumerate(zip(mine, root)):
        if a[0] != b[0]:
            return (f"parameter #{i} is named {a[0]!r} on rank {rank} but {b[0]!r} on rank 0 "
                    f"(shapes {tuple(a[1])} and {tuple(b[1])})")
        if a[1] != b[1]:
            return (f"parameter {a[0]!r} has shape {tuple(a[1])} on rank {rank} but shape "
                    f"{tuple(b[1])} on rank 0")
        if a[2] != b[2]:
            return (f"parameter {a[0]!r} has dtype {a[2]} on rank {rank} but dtype {b[2]} on rank 0 "
                    f"(shape {tuple(a[1])})")
    if len(mine) != len(root):
        extra = mine[len(root):] or root[len(mine):]
        who = rank if len(mine) > len(root) else 0
        return (f"rank {rank} has {len(mine)} parameters but rank 0 has {len(root)}; the first "
                f"extra one, on rank {who}, is {extra[0][0]!r} with shape {tuple(extra[0][1])}")
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
    """Check that every rank's parameters have rank 0's names, shapes and dtypes; raise the
    same RuntimeError on every rank otherwise (naming the rank, the parameter and both
    shapes), so no rank is left waiting in a later collective. Phase ``"verify"``."""
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


def broadcast_tensors(comm, tensors, root: int = 0, algorithm: str = "linear", scratch=None,
                      tail: np.ndarray | None = None) -> None:
    """Copy the root's values of `tensors` (parameters or buffers) into every rank's, one
    flat message per dtype. `tail` (optional, the first dtype's) rides at the end of the
    first message: the root's values land in every rank's `tail`. Recorded under the
    caller's phase."""
    if comm is None or comm.size == 1:
        return
    for i, layout in enumerate(layouts_by_dtype(tensors)):
        extra = tail.size if i == 0 and tail is not None else 0
        flat = np.empty(layout.count + extra, layout.dtype)
        layout.pack_data(out=flat[:layout.count])
        if extra:
            flat[layout.count:] = tail
        if scratch is not None:
            with scratch.hold(flat.nbytes):
                broadcast(comm, flat, root, algorithm)
        else:
            broadcast(comm, flat, root, algorithm)
        if comm.rank != root:
            layout.unpack_data(flat[:layout.count])
            if extra:
                tail[...] = flat[layout.count:]


def sync_initial_state(module, comm, who: str) -> None:
    """What every distributed strategy does at wrap time: verify the model is the same on
    every rank, then broadcast rank 0's parameters and buffers (phase ``"init-broadcast"``),
    so every replica starts identical whatever each rank initialised."""
    verify_same_model(module, comm, who)
    if comm is None or comm.size == 1:
        return
    with comm.phase("init-broadcast"):
        broadcast_tensors(comm, list(module.parameters()))
        broadcast_tensors(comm, [b for b in module.buffers()])
