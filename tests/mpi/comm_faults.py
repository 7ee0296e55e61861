"""Worker for tests/test_faults.py: a training loop in which one rank fails, under a PLAIN
``mpiexec -n N python comm_faults.py FAULT STRATEGY MARK_FILE`` (no ``-m mpi4py``).

FAULT, made by the last rank at step 3 (the others then wait for it in a collective):
  raise      an uncaught RuntimeError
  exit       sys.exit(3)
  kill       SIGKILL to itself
  sleep      a 60 s sleep (the test sets MINIDIST_TIMEOUT=2: the watchdog must fire)
  interrupt  nobody fails; every rank trains until the test sends SIGINT to mpiexec
             (rank 0 writes MARK_FILE once step 3 is done)
  none       the control: 5 steps, exit 0
STRATEGY: dp, hub or ddp. Just before its fault the last rank writes the time (time.time())
into MARK_FILE, so the test measures from the fault to the end. Nothing is emitted: the test looks at the exit status, the time
it took and stderr, as a user would.
"""
import os
import signal
import sys
import time

import numpy as np

import minidist  # noqa: F401  (fail-stop is on from here)
from minidist import Tensor
from minidist.comm import Communicator
from minidist.nn import functional as F
from minidist.optim import SGD
from minidist.parallel import MLP, wrap

fault, strategy, mark_file = sys.argv[1], sys.argv[2], sys.argv[3]


def mark() -> None:
    with open(mark_file + ".tmp", "w") as f:
        f.write(repr(time.time()))
    os.replace(mark_file + ".tmp", mark_file)


comm = Communicator()
failing = comm.rank == comm.size - 1
rng = np.random.default_rng(comm.rank)
model = wrap(MLP(8, 16, 4, rng=0, dtype=np.float64), strategy, comm)
optimizer = SGD(model.parameters(), lr=0.01)
steps = 5 if fault == "none" else 10**9
for step in range(steps):
    if step == 3 and failing and fault != "interrupt":
        mark()
        if fault == "raise":
            raise RuntimeError(f"injected fault on rank {comm.rank}")
        if fault == "exit":
            sys.exit(3)
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "sleep":
            time.sleep(60)
    if step == 3 and fault == "interrupt" and comm.rank == 0:
        mark()
    x, y = rng.standard_normal((4, 8)), rng.integers(0, 4, 4)
    loss = F.cross_entropy(model(Tensor(x)), y)
    model.zero_grad()
    loss.backward()
    model.step(optimizer)
