"""Worker that must fail: the last rank builds a wider model. `wrap(..., "ddp")` has to
raise on every rank at wrap time (sys.argv[1]: the strategy), naming the rank, the
parameter and both shapes; the test checks the exit status and the message."""
import sys

import numpy as np

from minidist.comm import Communicator
from minidist.parallel import MLP, wrap

comm = Communicator()
hidden = 13 if comm.rank == comm.size - 1 else 12
net = MLP(5, hidden, 4, rng=0, dtype=np.float64)
wrap(net, sys.argv[1] if len(sys.argv) > 1 else "ddp", comm)
print(f"rank {comm.rank}: wrap returned", flush=True)  # must never happen
