"""Every MPI tag minidist uses, in one place, so that no two kinds of message can meet.

    19_000-19_999  the strategies' own messages (parallel)
    20_000-29_999  the first DDP instance's bucket rings (one tag per bucket)
    30_000-31_999  the collectives of minidist.comm and calibration
    32_000-39_999  the same, run inside a wrapped model's step: shifted by model_tag_shift
    40_000-        later DDP instances, one span of 10_000 each, up to the MPI_TAG_UB
"""
# parallel: the strategies
TAG_OUTPUT_GATHER = 19_500  # dp's loss_on_root: outputs gathered to rank 0

# parallel: DDP's buckets
TAG_BUCKET_BASE = 20_000
TAG_BUCKET_SPAN = 10_000
TAG_INSTANCE_BASE = 40_000

# comm: the collectives
TAG_BARRIER = 30_000
TAG_REDUCE_SCATTER, TAG_ALLGATHER, TAG_RING_ALLREDUCE = 30_100, 30_101, 30_102
TAG_GATHER, TAG_REDUCE, TAG_BCAST, TAG_SCATTER = 30_200, 30_201, 30_202, 30_203
TAG_ALLREDUCE = 30_300
TAG_CALIBRATE = 31_000
TAG_CLOCK = 31_500            # clock.py: ping-pong offsets (bookkeeping)
TAG_MACHINE_PROFILE = 31_600  # cost/machine.py: the quick calibration's exchanges
TAG_DEBUG = 30_900  # debug mode's call records (debug.py), outside the ledger
TAG_EXITING = 30_901  # fail-stop: "this rank exits with a failure" (failstop.py), outside the ledger


# the collectives' tags inside a wrapped model's step (Communicator.model set) are shifted
# by this, so that two models stepped in a different order on different ranks never match
# each other's messages (the watchdog then names the model) instead of mixing them
COMM_TAGS = range(30_000, 32_000)
MODEL_TAG_SLOTS = 4


def model_tag_shift(model: int) -> int:
    """32_000-39_999: model 1 -> +2000 ... (four slots; models 4 apart share one)."""
    return len(COMM_TAGS) * (1 + (model - 1) % MODEL_TAG_SLOTS)
