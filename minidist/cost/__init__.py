"""minidist.cost: what the runtime will cost, predicted without running it.

* `counts`: closed-form messages, bytes, rounds and scratch of every collective as
  minidist.comm implements it (the ledger is tested against them);
* `steps`: each collective's critical path; `costmodel`: its alpha-beta-gamma time;
  `profiles`: named fabrics; `calibrate` (`minidist calibrate`) and `machine` (compare's
  quick one): fit a profile on the machine at hand, with `measure`'s timed primitives;
* `stepcost`: a strategy's per-rank messages, bytes, seconds and memory for one step.

It sits above minidist.comm (it reads its wire constants and calibrates through a
Communicator); comm never imports it. `use_profile` hands comm the threshold table that
``allreduce(algorithm="auto")`` looks up. The whole model: docs/cost-model.md.
"""
from .costmodel import best_allreduce, default_profile, predict, use_profile
from .counts import message_counts, rounds, scratch_bytes, syncbn_message_counts
from .profiles import PROFILES, Profile, get_profile, load_profile, save_profile

__all__ = ["message_counts", "rounds", "scratch_bytes", "syncbn_message_counts", "predict",
           "best_allreduce", "use_profile", "default_profile", "PROFILES", "Profile",
           "get_profile", "load_profile", "save_profile"]
