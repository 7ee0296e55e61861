"""Worker for tests/test_comm_failures.py: one rank fails while the others wait for it.

    mpiexec -n N python comm_failures.py MODE      (a plain launch: no -m mpi4py)

MODE:
  uncaught       the last rank raises; the others block in a receive from it that never
                 comes. Fail-stop (minidist.comm.failstop) must end the job.
  abort          the last rank calls ``comm.abort(...)`` directly.
  early          the last rank raises right after ``import minidist``, before MPI is even
                 initialised; the others wait for it in a receive.
  mismatch       rank 0 passes a shorter array to ring_allreduce than the others.
  ok             every rank emits, nobody fails (the control case).
Nothing is emitted in the failing modes: the test expects a non-zero exit and the message.
"""
import os
import sys

import minidist  # noqa: F401  (in a job of several ranks: fail-stop from here on)

mode = sys.argv[1]
if mode == "early" and os.environ.get("PMI_RANK") == str(int(os.environ["PMI_SIZE"]) - 1):
    raise RuntimeError("failure before any Communicator")

import numpy as np  # noqa: E402

from minidist.comm import Communicator, ring_allreduce  # noqa: E402
from mpi_util import emit  # noqa: E402

comm = Communicator()
last = comm.size - 1
waiting = np.zeros(1)

if mode == "uncaught":
    if comm.rank == last:
        raise RuntimeError(f"uncaught failure on rank {comm.rank}")
    comm.recv(waiting, last)
elif mode == "early":  # the last rank is gone already
    comm.recv(waiting, last)
elif mode == "abort":
    if comm.rank == last:
        comm.abort("rank gave up on purpose")
    comm.recv(waiting, last)
elif mode == "mismatch":
    ring_allreduce(comm, np.ones(10 if comm.rank == 0 else 12))
elif mode == "ok":
    emit({"sum": float(ring_allreduce(comm, np.ones(3))[0])})
else:
    raise SystemExit(f"unknown mode {mode!r}")
