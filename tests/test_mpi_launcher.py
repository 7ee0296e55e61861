import pytest

from mpi_util import run_mpi


@pytest.mark.parametrize("n", [1, 3])
def test_every_rank_reports(n):
    results = run_mpi(n, "hello.py", timeout=60)
    assert [r["rank"] for r in results] == list(range(n))
    assert all(r["size"] == n for r in results)
