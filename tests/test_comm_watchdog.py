"""The watchdog, debug-mode records and their settings, in one process (no mpiexec; the
multi-rank behaviour is tests/test_faults.py and tests/test_faults_mismatch.py)."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from minidist.comm import Communicator, allreduce, broadcast, ring_allreduce
from minidist.comm.debug import UNKNOWN, describe, differing_fields, fingerprint
from minidist.comm.watchdog import check_timeout, timeout_from_environment, yielding_from_environment


def test_timeout_settings_are_checked(monkeypatch):
    monkeypatch.delenv("MINIDIST_TIMEOUT", raising=False)
    assert timeout_from_environment() == 300.0
    monkeypatch.setenv("MINIDIST_TIMEOUT", "0")
    assert timeout_from_environment() == 0.0
    for bad in ("-1", "soon", "inf", "nan"):
        monkeypatch.setenv("MINIDIST_TIMEOUT", bad)
        with pytest.raises(ValueError, match=f"MINIDIST_TIMEOUT must be a number of seconds >= 0.*{bad}"):
            timeout_from_environment()
    with pytest.raises(ValueError, match="timeout must be"):
        Communicator(timeout=-2)
    assert Communicator(timeout=2.5).timeout == 2.5


def test_yield_setting(monkeypatch):
    monkeypatch.setenv("MINIDIST_YIELD", "1")
    assert yielding_from_environment() is True
    monkeypatch.setenv("MINIDIST_YIELD", "0")
    assert Communicator().yielding is False
    monkeypatch.setenv("MINIDIST_YIELD", "auto")
    monkeypatch.setenv("MPI_LOCALNRANKS", "4096")  # more ranks than any machine here has cores
    assert yielding_from_environment() is True
    monkeypatch.setenv("MINIDIST_YIELD", "sometimes")
    with pytest.raises(ValueError, match="MINIDIST_YIELD must be auto, 1 or 0"):
        yielding_from_environment()


def test_a_wait_past_the_timeout_aborts_with_what_it_waited_for():
    code = ("import numpy as np\nfrom minidist.comm import Communicator\n"
            "comm = Communicator(timeout=0.5)\n"
            "with comm.phase('grad-reduce'):\n    comm.recv(np.zeros(1), 0, tag=3)\n")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 124, proc.stderr
    assert ("minidist watchdog: point-to-point (phase 'grad-reduce') waited 0.5 s "
            "(MINIDIST_TIMEOUT=0.5) for a message from rank 0; still waiting for rank(s) [0]") in proc.stderr
    assert time.perf_counter() - started < 30


def test_records_compare_field_by_field_and_unknown_matches_anything():
    comm = Communicator(debug=True)
    x = np.zeros(12)
    ring = fingerprint(comm, "ring_allreduce", x, "sum", None, None)
    same = fingerprint(comm, "allreduce", x, "sum", None, "ring")
    assert (ring == same).all()  # one collective, the algorithm a field
    assert describe(ring).endswith("allreduce(count=12, dtype=float64, op=sum, algorithm=ring)")
    other = fingerprint(comm, "ring_allreduce", x.astype(np.int64), "max", None, None)
    assert differing_fields(np.stack([ring, other])) == ["dtype", "op"]
    unknown_piece = fingerprint(comm, "scatter", None, None, 0, None)
    root_piece = fingerprint(comm, "scatter", x, None, 0, None)
    assert unknown_piece[2] == UNKNOWN and differing_fields(np.stack([unknown_piece, root_piece])) == []


def test_debug_mode_counts_collective_calls_not_their_inner_steps():
    comm = Communicator(debug=True)
    x = np.ones(5)
    ring_allreduce(comm, x)
    allreduce(comm, x, algorithm="rabenseifner")
    broadcast(comm, x)
    comm.barrier()
    assert comm.calls == 4 and comm.operation is None
    assert (x == 1).all()
