"""`Ledger`: what one rank sent, received, waited for and allocated, per phase.

The `Communicator` calls `record` once per message; the ledger aggregates counters per
``(phase, peer, direction)`` (``"send"``, ``"recv"``, or ``"mpi"`` for a call into the MPI
library's own collective). A ``Sendrecv``'s seconds go to its receive side only, so
``totals()["seconds"]`` is the wall time inside communication calls, never counted twice;
``wait_seconds`` beside it is the part spent before the last participant entered. It also
tracks the scratch buffers collectives use (current and peak). Details: docs/comm.md.
"""
from __future__ import annotations

SEND, RECV, MPI_CALL = "send", "recv", "mpi"
DEFAULT_PHASE = "default"


def _empty_totals() -> dict:
    return {"bytes_sent": 0, "bytes_received": 0, "messages_sent": 0,
            "messages_received": 0, "seconds": 0.0, "wait_seconds": 0.0}


class Ledger:
    """Per-rank communication and scratch-memory accounting.

    Args:
        detailed: also keep one record per message, in order (see `records`).

    Attributes:
        detailed (bool): may be switched on or off at any time.
        current_temp_bytes (int): scratch bytes the collectives hold right now.
        peak_temp_bytes (int): the most they held at once since the last `reset`.
    """

    def __init__(self, detailed: bool = False):
        self.detailed = bool(detailed)
        self._counters: dict[tuple, list] = {}  # (phase, peer, direction) -> [messages, bytes, seconds]
        self._log: list[dict] = []
        self._wait: dict[str, float] = {}  # phase -> seconds waiting for the last peer (timeline.py)
        self.current_temp_bytes = 0
        self.peak_temp_bytes = 0

    # ---- recording (hot path) ------------------------------------------------------------
    def record(self, phase: str, peer, direction: str, nbytes: int, seconds: float,
               messages: int = 1) -> None:
        """Count `messages` message(s) of `nbytes` bytes in total to/from `peer`."""
        key = (phase, peer, direction)
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = [0, 0, 0.0]
        c[0] += messages
        c[1] += nbytes
        c[2] += seconds
        if self.detailed:
            self._log.append({"phase": phase, "peer": peer, "direction": direction,
                              "messages": messages, "bytes": int(nbytes), "seconds": seconds})

    def record_exchange(self, phase: str, dest, sent: int, source, received: int,
                        seconds: float) -> None:
        """One combined send-and-receive (``Sendrecv``): a send of `sent` bytes to `dest`
        (no seconds) and a receive of `received` bytes from `source` (all the seconds)."""
        if self.detailed:
            self.record(phase, dest, SEND, sent, 0.0)
            self.record(phase, source, RECV, received, seconds)
            return
        counters = self._counters  # `record` twice, inlined: the latency path of every collective
        out, back = counters.get((phase, dest, SEND)), counters.get((phase, source, RECV))
        if out is None or back is None:
            out = counters.setdefault((phase, dest, SEND), [0, 0, 0.0])
            back = counters.setdefault((phase, source, RECV), [0, 0, 0.0])
        out[0] += 1
        out[1] += sent
        back[0] += 1
        back[1] += received
        back[2] += seconds

    # ---- queries -------------------------------------------------------------------------
    def totals(self, phase: str | None = None) -> dict:
        """``{bytes_sent, bytes_received, messages_sent, messages_received, seconds,
        wait_seconds}`` for this rank, over one phase or (``phase=None``) all of them. An
        unknown phase gives zeros."""
        t = _empty_totals()
        for (ph, _peer, direction), (messages, nbytes, seconds) in self._counters.items():
            if phase is not None and ph != phase:
                continue
            if direction == SEND:
                t["messages_sent"] += messages
                t["bytes_sent"] += nbytes
            elif direction == RECV:
                t["messages_received"] += messages
                t["bytes_received"] += nbytes
            t["seconds"] += seconds
        t["wait_seconds"] = sum((w for ph, w in self._wait.items() if phase is None or ph == phase), 0.0)
        return t

    def add_wait(self, phase: str, seconds: float) -> None:
        """Of this phase's seconds, `seconds` were spent waiting for the last participant of
        a collective call to enter it (computed after the step: `timeline.Timeline.settle`)."""
        self._wait[phase] = self._wait.get(phase, 0.0) + seconds

    def phases(self) -> list[str]:
        """The phases seen since the last `reset`, in the order they first appeared."""
        return list(dict.fromkeys(ph for ph, _, _ in self._counters))

    def by_phase(self) -> dict[str, dict]:
        """``{phase: totals(phase)}`` for every phase seen."""
        return {ph: self.totals(ph) for ph in self.phases()}

    def by_peer(self, phase: str | None = None) -> dict:
        """``{peer: {"bytes_sent", "bytes_received", "messages_sent",
        "messages_received"}}`` (peer None: calls into MPI's own collectives)."""
        out: dict = {}
        for (ph, peer, direction), (messages, nbytes, _s) in self._counters.items():
            if phase is not None and ph != phase or direction == MPI_CALL:
                continue
            d = out.setdefault(peer, {"bytes_sent": 0, "bytes_received": 0,
                                      "messages_sent": 0, "messages_received": 0})
            side = "sent" if direction == SEND else "received"
            d["messages_" + side] += messages
            d["bytes_" + side] += nbytes
        return out

    def records(self) -> list[dict]:
        """JSON-ready rows ``{phase, peer, direction, messages, bytes, seconds}``.

        With ``detailed=True``: one row per message (``messages == 1``, or the number of
        messages an aggregated call stood for), in the order they completed. Otherwise one
        row per ``(phase, peer, direction)`` with the summed counters. Same keys either way.
        """
        if self.detailed:
            return [dict(r) for r in self._log]
        return [{"phase": ph, "peer": peer, "direction": d, "messages": m, "bytes": b,
                 "seconds": s} for (ph, peer, d), (m, b, s) in self._counters.items()]

    def reset(self) -> None:
        """Forget every message; the scratch peak restarts from what is held now."""
        self._counters.clear()
        self._log.clear()
        self._wait.clear()
        self.peak_temp_bytes = self.current_temp_bytes

    # ---- scratch memory ------------------------------------------------------------------
    def reset_peak(self) -> None:
        """Restart the scratch peak from what is held now (the message counters stay)."""
        self.peak_temp_bytes = self.current_temp_bytes

    def alloc(self, nbytes: int) -> None:
        """A collective allocated `nbytes` of scratch."""
        self.current_temp_bytes += int(nbytes)
        if self.current_temp_bytes > self.peak_temp_bytes:
            self.peak_temp_bytes = self.current_temp_bytes

    def held_briefly(self, nbytes: int) -> None:
        """A collective holds `nbytes` of scratch and gives them back with nothing allocated
        or freed meanwhile (one thread, a blocking call): the counters as `alloc` then
        `free` leave them, in one comparison (the latency path, latency.py)."""
        if self.current_temp_bytes + nbytes > self.peak_temp_bytes:
            self.peak_temp_bytes = self.current_temp_bytes + nbytes

    def free(self, nbytes: int) -> None:
        """A collective released `nbytes` of scratch it had reported with `alloc`."""
        nbytes = int(nbytes)
        if nbytes > self.current_temp_bytes:
            raise ValueError(f"free({nbytes}) exceeds the {self.current_temp_bytes} scratch bytes "
                             "currently allocated; every free must match an earlier alloc")
        self.current_temp_bytes -= nbytes

    def temporary(self, nbytes: int) -> "_Temporary":
        """``with ledger.temporary(buf.nbytes): ...`` counts `nbytes` of scratch while the
        block runs (released even if it raises)."""
        return _Temporary(self, int(nbytes))

    def __repr__(self) -> str:
        t = self.totals()
        return (f"Ledger(sent={t['messages_sent']} msgs/{t['bytes_sent']} B, "
                f"received={t['messages_received']} msgs/{t['bytes_received']} B, "
                f"seconds={t['seconds']:.6f}, peak_temp_bytes={self.peak_temp_bytes})")


class _Temporary:
    """The context manager of `Ledger.temporary`: a plain class, about 5x cheaper per use
    than a @contextmanager generator (it sits on the small-message path)."""

    __slots__ = ("_ledger", "_nbytes")

    def __init__(self, ledger: Ledger, nbytes: int):
        self._ledger, self._nbytes = ledger, nbytes

    def __enter__(self) -> None:
        self._ledger.alloc(self._nbytes)

    def __exit__(self, *exc_info) -> bool:
        self._ledger.free(self._nbytes)
        return False
