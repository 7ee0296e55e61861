"""Worker for tests/test_timing.py: clock offsets against a skewed local clock, and the
wait/transfer split of collective calls (one rank sleeps before a broadcast)."""
import sys
import time

import numpy as np

from minidist.comm import Communicator, RingAllreduce, broadcast, gather_to_root, ring_allreduce
from minidist.comm.clock import synchronize_clocks
from minidist.comm.timeline import Timeline
from mpi_util import emit

SLEEP = float(sys.argv[1]) if len(sys.argv) > 1 else 0.2
comm = Communicator()
skew = 0.25 * comm.rank + 0.1 * (comm.rank % 2)  # this rank's local clock runs this far ahead


def skewed_clock():  # CLOCK_MONOTONIC is one clock for every process of this machine: the truth
    return time.clock_gettime(time.CLOCK_MONOTONIC) + skew


sync = synchronize_clocks(comm.mpi, rounds=10, clock=skewed_clock)
comm.timeline = timeline = Timeline(sync, comm.rank)
x = np.arange(1000, dtype=np.float64)
with comm.phase("warm"):
    ring_allreduce(comm, x)
    gather_to_root(comm, x)
with comm.phase("late"):
    if comm.rank == 1:
        time.sleep(SLEEP)
    ring_allreduce(comm, x)  # every rank's result needs rank 1's data: all of them wait
    broadcast(comm, x)
with comm.phase("bucket"):
    ring = RingAllreduce(comm, np.ones(10_000), tag=777).start()
    ring.wait()
calls = timeline.settle(comm.mpi, comm.ledger)
emit({"offset": sync.offset, "bound": sync.bound, "true_offset": skew,
      "calls": [{"name": c.name, "phase": c.phase, "duration": c.duration, "wait": c.wait,
                 "transfer": c.transfer, "enter": c.enter - sync.offset} for c in calls],
      "ledger_wait": {ph: t["wait_seconds"] for ph, t in comm.ledger.by_phase().items()},
      "events": [[name, cat, start, end, args] for name, cat, start, end, args in timeline.events]})
