"""The fault matrix: one rank fails during training under a PLAIN ``mpiexec`` (no
``-m mpi4py``) and every rank must end, non-zero, quickly, with the message on stderr, as
a user would see it (tests/mpi/comm_faults.py).

Faults: an uncaught exception, ``sys.exit(3)``, SIGKILL of one rank, SIGINT to mpiexec
(one Ctrl-C), one rank sleeping past the watchdog (MINIDIST_TIMEOUT=2). Strategies dp,
hub, ddp. N = 3 for every pair; N = 2 for every fault, the strategy rotating (to keep the
launches few on a small machine). Times run from the fault (the worker writes the moment
into a file) to the end of mpiexec; afterwards no rank of the job may be left running.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mpi_util import HERE, ROOT, mpiexec

pytestmark = pytest.mark.mpi
FAULTS = ("raise", "exit", "kill", "interrupt", "sleep")
STRATEGIES = ("dp", "hub", "ddp")
WATCHDOG = 2.0
CASES = ([(3, f, s) for f in FAULTS for s in STRATEGIES]
         + [(2, f, STRATEGIES[i % 3]) for i, f in enumerate(FAULTS)])
EXPECTED = {  # what the job prints, and the exit status mpiexec gives
    "raise": ("[rank {last}/{n}] RuntimeError: injected fault on rank {last}", 1),
    "exit": ("[rank {last}/{n}] sys.exit(3) while the other ranks go on: ending the whole job", 3),
    "kill": ("Killed (signal 9)", 9),  # the killed rank says nothing: mpiexec's report
    "interrupt": ("interrupted (SIGINT): aborting the whole job", 130),
    "sleep": ("minidist watchdog:", 124),
}
LIMITS = {"interrupt": 5.0, "sleep": WATCHDOG + 5}  # seconds from the fault; others: 10


def launch(n, fault, strategy, mark):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MINIDIST_TIMEOUT=str(WATCHDOG),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    cmd = [mpiexec(), "-n", str(n), sys.executable, str(HERE / "mpi" / "comm_faults.py"), fault,
           strategy, mark]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout):
    """(status, stdout, stderr, end time) once mpiexec ends; fails on a hang."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the job did not end within {timeout} s (a rank was left waiting)\n{err[-3000:]}")
    return proc.returncode, out, err, time.time()


def wait_for(path, proc, seconds=90):
    deadline = time.time() + seconds
    while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert os.path.exists(path), "the job never reached the fault"


def left_running(mark, grace=3.0) -> list[str]:
    """Processes of this job still alive `grace` seconds after mpiexec returned (their
    command line holds the unique mark path): ranks being torn down may linger a moment."""
    deadline = time.time() + grace
    while True:
        found = subprocess.run(["pgrep", "-f", mark], capture_output=True, text=True).stdout.split()
        found = [pid for pid in found if int(pid) != os.getpid()]
        if not found or time.time() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("n, fault, strategy", CASES)
def test_one_failing_rank_ends_the_whole_job(n, fault, strategy):
    with tempfile.TemporaryDirectory() as folder:
        mark = str(Path(folder) / f"fault-{fault}-{strategy}-{n}")
        proc = launch(n, fault, strategy, mark)
        if fault == "interrupt":
            wait_for(mark, proc)
            proc.send_signal(signal.SIGINT)  # one Ctrl-C to mpiexec
        status, out, err, ended = finish(proc, 120)
        fault_time = float(Path(mark).read_text())
        leftovers = left_running(mark)
    words, expected_status = EXPECTED[fault]
    assert words.format(last=n - 1, n=n) in (out + err if fault == "kill" else err), err[-3000:]
    assert status == expected_status, (status, err[-3000:])
    assert ended - fault_time < LIMITS.get(fault, 10.0), f"ended {ended - fault_time:.1f} s after the fault"
    assert not leftovers, f"ranks still running: {leftovers}"
    if fault == "sleep":  # the fault comes in the 4th step: the watchdog says so
        assert "step 4" in err and f"still waiting for rank(s) [{n - 1}]" in err, err[-3000:]


def test_the_control_run_exits_zero():
    with tempfile.TemporaryDirectory() as folder:
        status, _, err, _ = finish(launch(3, "none", "ddp", str(Path(folder) / "mark")), 60)
    assert status == 0, err[-3000:]
