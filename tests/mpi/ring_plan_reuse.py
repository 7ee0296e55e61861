"""Worker: ring_allreduce called again and again on the same arrays (cached schedules),
on new ones, and past the schedule cache's size; every result checked against the exact
sum."""
import numpy as np

from minidist.comm import Communicator, ring_allreduce
from minidist.comm import ring_plan
from mpi_util import emit

comm = Communicator()
rank, size = comm.rank, comm.size
ok, calls = True, 0
same = np.empty(1000, np.float64)
for trial in range(5):  # the same array, new contents: the cached plan must see them
    same[:] = np.arange(1000) * (rank + 1) + trial
    ring_allreduce(comm, same)
    ok &= bool(np.array_equal(same, np.arange(1000) * size * (size + 1) / 2 + trial * size))
    calls += 1
for count in list(range(1, ring_plan.MAX_PLANS + 6)) + [7, 3, 1]:  # evictions, and sizes again
    for dtype in (np.float32, np.int64):
        x = np.full(count, rank + 1, dtype)
        ring_allreduce(comm, x, op="sum")
        ok &= bool(np.all(x == size * (size + 1) // 2))
        calls += 1
mean = np.full((4, 5), float(rank), np.float64)  # 2-D: a fresh flat view each call
for _ in range(2):
    ring_allreduce(comm, mean, op="mean")
    ok &= bool(np.allclose(mean, (size - 1) / 2))
    mean[:] = rank
emit({"ok": ok, "calls": calls, "plans": len(ring_plan._plans), "max": ring_plan.MAX_PLANS})
