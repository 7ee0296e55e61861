"""`Timeline`: per-rank spans on the common clock, and each collective call split into
waiting (until the last participant entered) and transfer (the rest).

A call records only its own enter and exit times while it runs: no message is added
inside a step. `settle` then exchanges the enter times once (a bookkeeping allgather,
outside every ledger phase), and for each call computes
``wait = |time inside the call| within [own enter, last enter]`` (for a blocking call:
``clip(last enter - own enter, 0, duration)``), ``transfer = duration - wait``, and
adds the waits to the ledger's ``wait_seconds`` of the call's phase. Calls are matched
across ranks by (name, phase, tag, n-th such call). Attach with
``comm.timeline = Timeline(synchronize_clocks(comm.mpi), comm.rank)``; collectives
decorated with `traced` and DDP's rings then record themselves. Details: docs/timing.md.
"""
from __future__ import annotations

import functools

__all__ = ["Timeline", "Call", "RingTrace", "traced", "span"]


class Call:
    """One collective call on this rank: local-clock enter/exit, the intervals it spent
    inside MPI (None: the whole call, a blocking collective), and after `settle` its
    wait and transfer seconds."""

    __slots__ = ("name", "phase", "tag", "seq", "enter", "exit", "inside", "wait", "last_enter",
                 "args")

    def __init__(self, name, phase, tag, seq, enter, args):
        self.name, self.phase, self.tag, self.seq, self.enter = name, phase, tag, seq, enter
        self.exit, self.inside, self.wait, self.last_enter, self.args = None, None, 0.0, enter, args

    @property
    def key(self) -> str:
        return f"{self.name}|{self.phase}|{self.tag}|{self.seq}"

    def intervals(self) -> list:
        return [(self.enter, self.exit)] if self.inside is None else self.inside

    @property
    def duration(self) -> float:
        """Seconds spent inside the call (for a non-blocking ring: inside its tests and waits)."""
        return sum(b - a for a, b in self.intervals())

    @property
    def transfer(self) -> float:
        return self.duration - self.wait


def _overlap(intervals, lo: float, hi: float) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)


class Timeline:
    """This rank's record of spans and collective calls. Times are kept on the local clock
    and converted to the common clock (`ClockSync.to_common`) when exported.

    Attributes:
        clock (ClockSync): offsets against rank 0 and their error bound.
        rank (int): this rank.
        events (list): settled spans ``(name, cat, start, end, args)``, common-clock seconds.
        step: a label attached to every event (compare.py sets the step number).
    """

    def __init__(self, clock, rank: int):
        self.clock, self.rank = clock, rank
        self.now = clock.local_clock  # the local clock (perf_counter; a test may skew it)
        self.events: list = []
        self.step = None
        self._open: list = []      # calls and spans of the current step, not yet settled
        self._calls: list = []
        self._seq: dict = {}
        self._depth = 0            # > 0 while a blocking collective runs (inner ones are its own)

    # ---- recording (cheap: local clock, no messages) ------------------------------------------
    def begin(self, name: str, phase: str, tag: int = -1, args=None, blocking: bool = True) -> Call:
        ident = (name, phase, tag)
        seq = self._seq.get(ident, 0)
        self._seq[ident] = seq + 1
        call = Call(name, phase, tag, seq, self.now(), args or {})
        if not blocking:
            call.inside = []
        self._calls.append(call)
        self._depth += blocking
        return call

    def end(self, call: Call, blocking: bool = True) -> None:
        call.exit = self.now()
        self._depth -= blocking

    def span(self, name: str, start: float, end: float, cat: str = "compute", **args) -> None:
        """A span from local-clock `start` to `end` (forward, backward, a ring step, ...)."""
        self._open.append((name, cat, start, end, args))

    # ---- after the step: one bookkeeping exchange --------------------------------------------
    def settle(self, mpi_comm, ledger=None) -> list[Call]:
        """Exchange enter times (one pickled allgather of the step's ``{key: enter}``, on the
        raw MPI communicator: no ledger sees it), compute each call's wait and transfer, add
        the waits to `ledger` per phase, and move the step's spans to `events`. Collective:
        every rank calls it at the same point. Returns the settled calls."""
        if any(c.exit is None for c in self._calls):  # checked before the step's calls are taken
            open_ones = [c.key for c in self._calls if c.exit is None]
            raise RuntimeError(f"rank {self.rank}: settle() while calls are still open: {open_ones}; "
                               "settle after the step, once every collective has finished")
        calls, self._calls, self._seq = self._calls, [], {}
        offset = self.clock.offset
        mine = {c.key: c.enter - offset for c in calls}
        everyone = mpi_comm.allgather(mine) if mpi_comm.Get_size() > 1 else [mine]
        for c in calls:
            last = max(part[c.key] for part in everyone if c.key in part) + offset  # local clock
            c.last_enter = max(last, c.enter)
            c.wait = _overlap(c.intervals(), c.enter, c.last_enter)
            if ledger is not None:
                ledger.add_wait(c.phase, c.wait)
            self._export(c)
        for name, cat, start, end, args in self._open:
            self.events.append((name, cat, start - offset, end - offset, dict(args, step=self.step)))
        self._open = []
        return calls

    def _export(self, call: Call) -> None:
        offset, step = self.clock.offset, self.step
        args = dict(call.args, phase=call.phase, step=step, wait_us=1e6 * call.wait,
                    transfer_us=1e6 * call.transfer)
        self.events.append((call.name, "comm", call.enter - offset, call.exit - offset, args))
        for a, b in call.intervals():
            lo, hi = max(a, call.enter), min(b, call.last_enter)
            if hi > lo:
                self.events.append(("wait", "wait", lo - offset, hi - offset,
                                    {"phase": call.phase, "step": step, "for": call.name}))


def traced(name: str):
    """Decorator for a blocking collective ``fn(comm, ...)``: when ``comm.timeline`` is set,
    the call is recorded (enter, exit, phase); calls made inside it are its own business."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(comm, *args, **kwargs):
            timeline = getattr(comm, "timeline", None)
            if timeline is None or timeline._depth:
                return fn(comm, *args, **kwargs)
            call = timeline.begin(name, comm.current_phase)
            try:
                return fn(comm, *args, **kwargs)
            finally:
                timeline.end(call)
        return wrapper
    return decorate


class span:
    """``with span(timeline, "forward"): ...`` records a span; a no-op when `timeline` is None."""

    __slots__ = ("_timeline", "_name", "_cat", "_start")

    def __init__(self, timeline, name: str, cat: str = "compute"):
        self._timeline, self._name, self._cat = timeline, name, cat

    def __enter__(self):
        if self._timeline is not None:
            self._start = self._timeline.now()
        return self

    def __exit__(self, *exc_info) -> bool:
        if self._timeline is not None:
            self._timeline.span(self._name, self._start, self._timeline.now(), self._cat)
        return False


class RingTrace:
    """What a non-blocking ring (`RingAllreduce`) records: the call from `start` to done,
    the time inside its `start` and `advance` calls (posts, tests, waits, additions), and
    one span per step (posted -> applied) with its bytes and peers."""

    __slots__ = ("_timeline", "call", "_posted")

    def __init__(self, timeline, phase: str, tag: int, nbytes: int):
        self._timeline = timeline
        self.call = timeline.begin("ring_allreduce bucket", phase, tag, {"bytes": nbytes, "tag": tag},
                                   blocking=False)
        self._posted = self.call.enter

    def now(self) -> float:
        return self._timeline.now()

    def posted(self) -> None:
        self._posted = self._timeline.now()

    def inside(self, start: float) -> None:
        self.call.inside.append((start, self._timeline.now()))

    def step_done(self, step: int, total: int, sent: int, received: int, right: int, left: int) -> None:
        stage = "reduce-scatter" if step < total // 2 else "all-gather"
        self._timeline.span(f"ring step {step}", self._posted, self._timeline.now(), "ring",
                            stage=stage, bytes_sent=sent, bytes_received=received, to=right,
                            **{"from": left, "tag": self.call.tag})

    def done(self) -> None:
        self._timeline.end(self.call, blocking=False)


def trace_method(obj, method: str, timeline, name: str) -> None:
    """Record every call of ``obj.method`` as a span `name` (e.g. the optimizer's step,
    called inside a strategy's ``step``): the instance's method is wrapped in place."""
    bound = getattr(obj, method)

    @functools.wraps(bound)
    def wrapper(*args, **kwargs):
        with span(timeline, name):
            return bound(*args, **kwargs)
    setattr(obj, method, wrapper)
