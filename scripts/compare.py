"""Train the same model on the same global batches under several data-parallel strategies
and record, step by step and rank by rank, what each one computes and what it costs.
The code is `minidist.compare`, which `minidist compare -n N` launches too.

    mpiexec -n 4 python scripts/compare.py                                  # MLP on spirals, 20 steps
    mpiexec -n 4 python scripts/compare.py --model cnn --norm sync --steps 10
    mpiexec -n 4 python scripts/compare.py --norm batch                     # BatchNorm drifts, SyncBN does not
    mpiexec -n 3 python scripts/compare.py --batch 50 --strategies local,dp,dp-root,hub,ddp,ddp-fp16
    mpiexec -n 2 python scripts/compare.py --optimizer adam --out runs/adam.jsonl
    mpiexec -n 2 python scripts/compare.py --steps 3 --checkpoint runs/ck    # then, in a new job:
    mpiexec -n 2 python scripts/compare.py --steps 3 --resume runs/ck       # steps 3..5, bitwise as 0..5

Output: --out DIR (default: a new runs/<timestamp>/) gets run.jsonl, report.md,
report.html and the plots; --out RUN.jsonl writes that file and the report in RUN-report/.
The run file (JSONL, written atomically by rank 0) is a header record

    {"type": "header", "config": {...arguments...}, "world_size": N, "parameters": P,
     "model_shape": {...}, "strategies": [...], "shard_sizes": [...], "profile": {...},
     "environment": {mpi_library, mpi_standard, ranks, cores, host, python, numpy, platform},
     "clock": {offsets against rank 0 and their error bound}, "cores": C,
     "calibration": {this machine's profile, spread, verdict; null when a profile is named},
     "created": "..."}

then one record per strategy, step and rank:

    {"type": "step", "strategy", "step", "rank", "samples", "loss" (this rank's shard; null
     for dp-root off rank 0, where the global loss is), "accuracy" (shard, before the
     update), "max_param_diff" (max |param - local reference| after the step),
     "phases": {phase: {bytes_sent, bytes_received, messages_sent, messages_received,
     seconds, wait_seconds}}, "comm_seconds", "compute_seconds" (step wall time minus
     communication), "wait_seconds" (waiting for the last rank to enter a collective),
     "call_seconds" (time inside collective calls), "wall_seconds", "memory": {parameters,
     gradients, optimizer, comm_buffers, comm_peak, total, peak}}

and trace.json beside the report (Chrome trace events; docs/timing.md).

Configuration errors print one line on rank 0 and every rank exits with status 2
(--debug or MINIDIST_DEBUG=1 for the traceback).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout run without installing

import minidist  # noqa: E402,F401  (first: one BLAS thread per rank before NumPy loads)
from minidist.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
