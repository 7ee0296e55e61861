import pytest

from mpi_util import run_mpi


@pytest.mark.parametrize("n", [1, 3])
def test_every_rank_reports(n):
    results = run_mpi(n, "hello.py", timeout=60)
    assert [r["rank"] for r in results] == list(range(n))
    assert all(r["size"] == n for r in results)


def test_ranks_get_one_blas_thread_unless_told_otherwise():
    import os
    import re
    import subprocess
    import sys

    from mpi_util import mpiexec

    # each rank prints <value>; the ranks' lines may interleave, so parse, don't split
    code = "import minidist, os; print('<%s>' % os.environ.get('OPENBLAS_NUM_THREADS'), flush=True)"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    run = lambda n, extra: subprocess.run([mpiexec(), "-n", str(n), sys.executable, "-c", code],  # noqa: E731
                                          env=dict(env, **extra), capture_output=True, text=True,
                                          timeout=60).stdout
    values = lambda text: sorted(re.findall(r"<([^>]*)>", text))  # noqa: E731
    assert values(run(2, {})) == ["1", "1"]
    assert values(run(2, {"OPENBLAS_NUM_THREADS": "3"})) == ["3", "3"]
    assert values(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, timeout=60).stdout) == ["None"]
