"""minidist.cost: what the runtime will cost, predicted without running it.

* `counts`: closed-form messages, bytes, rounds and scratch of every collective as
  minidist.comm implements it (the ledger is tested against them);
* `costmodel`: alpha-beta-gamma time of each collective, `profiles`: named fabrics,
  `calibrate`: fit a profile on the machine at hand;
* `stepcost`: a strategy's per-rank messages, bytes, seconds and memory for one step.

It sits above minidist.comm (it may read its wire constants and run calibration through a
Communicator); comm never imports it. `use_profile` also hands comm the thresholds that
``allreduce(algorithm="auto")`` uses.
"""
from .costmodel import best_allreduce, default_profile, predict, use_profile
from .counts import message_counts, rounds, scratch_bytes, syncbn_message_counts
from .profiles import PROFILES, Profile, get_profile, load_profile, save_profile

__all__ = ["message_counts", "rounds", "scratch_bytes", "syncbn_message_counts", "predict",
           "best_allreduce", "use_profile", "default_profile", "PROFILES", "Profile",
           "get_profile", "load_profile", "save_profile"]
