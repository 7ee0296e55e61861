import pytest

from mpi_util import run_mpi


@pytest.mark.parametrize("n", [1, 3])
def test_every_rank_reports(n):
    results = run_mpi(n, "hello.py", timeout=60)
    assert [r["rank"] for r in results] == list(range(n))
    assert all(r["size"] == n for r in results)


@pytest.mark.parametrize("variable, default, user_value", [
    ("OPENBLAS_NUM_THREADS", "1", "3"),  # one BLAS thread per rank
    ("MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD", str(256 << 10), "8192"),  # minidist/mpich.py
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
