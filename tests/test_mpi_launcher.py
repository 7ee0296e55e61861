import os
import sys

import pytest

from mpi_util import run_mpi


@pytest.mark.parametrize("n", [1, 3])
def test_every_rank_reports(n):
    results = run_mpi(n, "hello.py", timeout=60)
    assert [r["rank"] for r in results] == list(range(n))
    assert all(r["size"] == n for r in results)


@pytest.mark.parametrize("variable, default, user_value", [
    ("OPENBLAS_NUM_THREADS", "1", "3"),  # one BLAS thread per rank
    ("MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD", str(512 << 10), "8192"),  # minidist/mpich.py
])
def test_ranks_get_minidists_defaults_unless_told_otherwise(variable, default, user_value):
    import os
    import re
    import subprocess
    import sys

    from mpi_util import mpiexec

    # each rank prints <value>; the ranks' lines may interleave, so parse, don't split
    code = f"import minidist, os; print('<%s>' % os.environ.get({variable!r}), flush=True)"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k != variable}
    run = lambda n, extra: subprocess.run([mpiexec(), "-n", str(n), sys.executable, "-c", code],  # noqa: E731
                                          env=dict(env, **extra), capture_output=True, text=True,
                                          timeout=60).stdout
    values = lambda text: sorted(re.findall(r"<([^>]*)>", text))  # noqa: E731
    assert values(run(2, {})) == [default, default]
    assert values(run(2, {variable: user_value})) == [user_value, user_value]
    assert values(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, timeout=60).stdout) == ["None"]


def test_mpich_defaults_respect_every_name_of_the_variable_and_say_when_they_came_too_late(monkeypatch):
    from minidist import mpich

    monkeypatch.setattr(mpich, "applied_before_mpi", mpich.applied_before_mpi)  # restored afterwards
    name = "MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD"
    for alias in ("MPICH_CH4_IPC_CMA_P2P_THRESHOLD", "MPIR_PARAM_CH4_IPC_CMA_P2P_THRESHOLD", name):
        monkeypatch.delenv(alias, raising=False)
    monkeypatch.setenv("MPICH_CH4_IPC_CMA_P2P_THRESHOLD", "8192")  # MPICH reads it as the same setting
    mpich.apply_defaults()
    assert name not in os.environ
    assert mpich.settings_in_effect("MPICH Version: 5.0.2").startswith("MPICH_CH4_IPC_CMA_P2P_THRESHOLD=8192")
    monkeypatch.delenv("MPICH_CH4_IPC_CMA_P2P_THRESHOLD")
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", object())  # MPI already started in this process
    mpich.apply_defaults()
    assert os.environ[name] == str(512 << 10) and mpich.applied_before_mpi is False
    assert mpich.settings_in_effect("MPICH Version: 5.0.2").endswith("(set after MPI had started: not in effect)")
    assert mpich.settings_in_effect("Open MPI v4.1.6") == "none (not MPICH)"
