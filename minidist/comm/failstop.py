"""Fail-stop: in a job of more than one rank, one failing rank ends the whole job.

Without this, a rank that raises or calls ``sys.exit(3)`` hangs in ``MPI_Finalize`` while
the others wait forever for its messages. `install` (called at ``import minidist`` when
the launcher says there are several ranks, and by every `Communicator` of more than one
rank) does what ``python -m mpi4py`` does, under a plain ``mpiexec -n N python script.py``:

* an unhandled exception prints its traceback, each line prefixed ``[rank R/N]``, then
  ``MPI_Abort(1)`` ends every rank (KeyboardInterrupt: 130);
* ``sys.exit(k)`` with k != 0 ends every rank with status k within seconds (it cannot be
  caught); when every rank exits so, they all leave normally and quietly;
* SIGINT (Ctrl-C) ends every rank with status 130; our wait loops poll, so this works
  while a rank waits for a message (see watchdog.py).
A killed rank (SIGKILL) is mpiexec's business: it ends the others. docs/reliability.md.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

import numpy as np

from .tags import TAG_EXITING

INTERRUPTED = 128 + signal.SIGINT  # 130, the shell's status for Ctrl-C
EXIT_WAIT_SECONDS = 5.0  # sys.exit(k): how long to wait for the other ranks to exit too
# (at most half of MINIDIST_TIMEOUT, so that the others' watchdogs do not fire first)
FORWARD_SECONDS = 0.2  # between writing the message and MPI_Abort: mpiexec forwards it meanwhile
_ORIGINAL_EXIT = sys.exit
_installed = False


def _world():
    from mpi4py import MPI  # initialises MPI if nothing did yet, so that Abort can reach mpiexec
    return MPI.COMM_WORLD


def _prefix() -> str:
    world = _world()
    return f"[rank {world.Get_rank()}/{world.Get_size()}] "


def abort(message: str, status: int = 1) -> None:
    """Write `message` to stderr, each line prefixed ``[rank R/N]``, flush, and end every
    rank of the job with ``MPI_Abort(status)``. Does not return."""
    prefix = _prefix()
    text = "".join(prefix + line + "\n" for line in message.rstrip("\n").split("\n"))
    try:
        sys.stdout.flush()
        sys.stderr.write(text)
        sys.stderr.flush()
        time.sleep(FORWARD_SECONDS)  # else the job may be torn down before mpiexec shows it
    finally:
        _world().Abort(status)
        os._exit(status)  # not reached: MPI_Abort does not return


def _excepthook(kind, value, tb) -> None:
    status = INTERRUPTED if issubclass(kind, KeyboardInterrupt) else 1
    text = "".join(traceback.format_exception(kind, value, tb))
    abort(text + f"minidist: unhandled {kind.__name__} on this rank: aborting the whole job", status)


def _exit(status=None) -> None:
    """``sys.exit`` in a job of several ranks. A failure status ends every rank: if the
    other ranks exit with a failure too (each tells the others), all leave normally, so a
    configuration error every rank finds, printed once by rank 0, stays the only line;
    if they do not within EXIT_WAIT_SECONDS, this rank does not call ``MPI_Finalize``
    (which would wait for them forever): ``MPI_Abort`` ends the job with its status."""
    if status is None or status == 0 or threading.current_thread() is not threading.main_thread():
        _ORIGINAL_EXIT(status)  # a success, or a thread's sys.exit: as always
    code = status if isinstance(status, int) else 1  # sys.exit("message"): status 1
    if not _others_exit_too(code):
        text = "" if isinstance(status, int) else f"{status}\n"
        abort(f"{text}sys.exit({status!r}) while the other ranks go on: ending the whole job "
              f"with status {code}", code)
    _ORIGINAL_EXIT(status)


def _others_exit_too(code: int) -> bool:
    """Tell every other rank that this one exits with `code`; whether every other rank says
    the same within EXIT_WAIT_SECONDS (raw messages, tag TAG_EXITING, outside any ledger)."""
    world = _world()
    others = [r for r in range(world.Get_size()) if r != world.Get_rank()]
    note = np.array([code], np.int64)
    sends = [world.Isend(note, r, TAG_EXITING) for r in others]
    heard = {r: np.empty(1, np.int64) for r in others}
    receives = [world.Irecv(heard[r], r, TAG_EXITING) for r in others]
    from .watchdog import timeout_from_environment  # (it imports this module)

    timeout = timeout_from_environment()
    deadline = time.perf_counter() + (min(EXIT_WAIT_SECONDS, timeout / 2) if timeout else EXIT_WAIT_SECONDS)
    while time.perf_counter() < deadline:
        if all(r.Test() for r in receives):
            for request in sends:  # small messages: sent already; this frees them
                request.Test()
            return True
        time.sleep(0.01)
    return False


def _on_sigint(signum, frame) -> None:
    abort("interrupted (SIGINT): aborting the whole job", INTERRUPTED)


def install() -> bool:
    """Turn fail-stop on for this process (idempotent); returns whether it is on. Call it
    only in a job of more than one rank."""
    global _installed
    if _installed:
        return True
    _installed = True
    sys.excepthook = _excepthook
    sys.exit = _exit
    try:  # only over Python's default handler, never over one the user set
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: the interpreter's own handler stays
        pass
    return True


def installed() -> bool:
    return _installed
