"""Worker for tests/test_costmodel.py: a quick calibration on every rank, and what a
single rank (MPI.COMM_SELF) does without and with a base profile."""
import minidist  # noqa: F401 first: the calibration runs with a minidist job's MPI settings (mpich.py)
from mpi4py import MPI

from minidist.cost.calibrate import calibrate
from minidist.comm.communicator import Communicator
from minidist.cost.profiles import PROFILES
from mpi_util import emit

comm = Communicator()
profile = calibrate(comm, quick=True)
result = {"profile": profile.to_dict(), "ledger_messages": comm.ledger.totals()["messages_sent"]}
if comm.rank == 0:
    solo = Communicator(MPI.COMM_SELF)
    try:
        calibrate(solo, quick=True)
        error = ""
    except ValueError as exc:
        error = str(exc)
    result["solo"] = {"error": error,
                      "with_base": calibrate(solo, quick=True, base=PROFILES["ib-hdr"]).to_dict()}
emit(result)
