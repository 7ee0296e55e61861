"""`ParallelModel`: what every strategy's wrapped model shares.

It is called like the model, exposes the model's parameters (so an optimizer built on
``model.parameters()`` updates the real ones), counts the samples each rank sees, and runs
one step as ``step(optimizer)`` = communication before the update, the update (skipped
when the step's status says so), communication after it, then the optional replica check
and the memory report. The status (global sample count, number of ranks with non-finite
gradients) rides in the gradient messages (tail.py); `_judge` makes it an error or a skip.

Also here: the wrap-time broadcasts the distributed strategies share (`broadcast_tensors`;
`sync_initial_state` first runs verify.py's `verify_same_model`). While a wrapped model
steps, its communicator names the model and the step (messages, debug mode, tags).
"""
from __future__ import annotations

from weakref import WeakKeyDictionary

import numpy as np

from ..autograd import Tensor
from ..autograd.function import is_grad_enabled
from ..autograd.workspace import scratch as workspace_array
from ..comm import broadcast
from .drift import ReplicaDriftError, assert_replicas_agree
from .flat import layouts_by_dtype
from .memory import ScratchMeter, measure, reset_ledger_peak
from .tail import NONFINITE, StatusTail, judge, verdict
from .verify import broadcast_text, first_problem, verify_same_model  # noqa: F401 (dp, checkpoint use them from here)

AVERAGES = ("samples", "ranks")
_models_wrapped: "WeakKeyDictionary" = WeakKeyDictionary()  # comm -> models wrapped on it so far


class ParallelModel:
    """Base of the wrapped models (see `minidist.parallel.wrap`).

    Attributes:
        module: the wrapped model (its Parameters are the ones updated).
        comm: the Communicator (None for "local").
        strategy (str): "local", "dp", "hub" or "ddp".
        model_id (int): 1, 2, ... in the order models were wrapped on `comm` (the same on
            every rank); messages name it.
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
        self.model_id = _models_wrapped.get(comm, 0) + 1 if comm is not None else 1
        if comm is not None:
            _models_wrapped[comm] = self.model_id
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
            assert_replicas_agree(self.module, self.comm)
        except ReplicaDriftError as exc:
            raise ReplicaDriftError(f"load_state_dict: after loading, the parameters of rank(s) {exc.ranks} "
                                    "differ from rank 0's: every rank must load the same state (e.g. "
                                    "minidist.load_checkpoint(path, model, optimizer) on every rank)",
                                    None, exc.ranks) from None
        return result

    def strategy_state(self) -> dict:
        """What a checkpoint keeps of the strategy itself (JSON values)."""
        return {"strategy": self.strategy, "steps": int(self.steps)}

    def load_strategy_state(self, state: dict) -> None:
        """Restore `strategy_state` (the same strategy's)."""
        self.steps = int(state["steps"])

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
        comm = self.comm
        if comm is not None:  # messages (watchdog, errors) name the model and the step
            comm.step, comm.model = self.steps + 1, self.model_id
            with comm.collective("step"):  # debug mode: every rank steps this model now
                pass
        try:
            self._before_update(optimizer)
            if not self._skip:
                self._update(optimizer)
            self._after_update(optimizer)
        finally:  # even when it raises (caught by the user): the next step counts afresh
            self._samples = 0
            if comm is not None:
                comm.model = None
        self.steps += 1
        if comm is not None:  # from now on the messages speak of the next step (its forward)
            comm.step = self.steps + 1
        if self.check_replicas:
            assert_replicas_agree(self.module, self.comm, step=self.steps)
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
                broadcast_tensors(self.comm, buffers, 0, algorithm, self._scratch, reuse="buffer-broadcast")


# ---- wrap-time checks and broadcasts ------------------------------------------------------------
def broadcast_tensors(comm, tensors, root: int = 0, algorithm: str = "linear", scratch=None,
                      tail: np.ndarray | None = None, reuse: str | None = None) -> None:
    """Copy the root's values of `tensors` (parameters or buffers) into every rank's, one
    flat message per dtype. `tail` (optional, the first dtype's) rides at the end of the
    first message: the root's values land in every rank's `tail`. `reuse` (a call made
    every step): the flat message lives in the workspace buffer of that name, kept between
    calls; else it is a fresh array. Recorded under the caller's phase."""
    if comm is None or comm.size == 1:
        return
    for i, layout in enumerate(layouts_by_dtype(tensors)):
        extra = tail.size if i == 0 and tail is not None else 0
        shape = (layout.count + extra,)
        flat = np.empty(shape, layout.dtype) if reuse is None else workspace_array(reuse, shape, layout.dtype)
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
