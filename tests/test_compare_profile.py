"""The comparison's profile also drives ``allreduce(algorithm="auto")``: `time_setup`
installs it in minidist.comm (the same profile on every rank)."""
from argparse import Namespace

from minidist.comm import Communicator
from minidist.comm.auto import choose_allreduce_algorithm
from minidist.compare import time_setup
from minidist.cost import PROFILES, Profile, use_profile


def test_time_setup_installs_the_runs_profile_for_auto():
    slow = Profile("slow-latency", alpha=1e-3, beta=1e-10, gamma=1e-11)
    try:
        use_profile(None)
        assert choose_allreduce_algorithm(1 << 20, 8) != "recursive_doubling"  # shm's choice
        args = Namespace(profile="slow.json", profile_obj=slow, recalibrate=False)
        time_setup(args, Communicator())
        assert choose_allreduce_algorithm(1 << 20, 8) == "recursive_doubling"  # the run's profile
        time_setup(Namespace(profile="shm", profile_obj=PROFILES["shm"], recalibrate=False), Communicator())
        assert choose_allreduce_algorithm(1 << 20, 8) != "recursive_doubling"
    finally:
        use_profile(None)
