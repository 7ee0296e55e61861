"""Worker for tests/test_machine_profile.py: calibrate (or reuse) into the folder argv[1]."""
import sys

from minidist.comm import Communicator
from minidist.cost.machine import machine_profile
from mpi_util import emit

emit(machine_profile(Communicator(), cache_dir=sys.argv[1]))
