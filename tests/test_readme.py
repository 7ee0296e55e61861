"""README.md stays true: its Python example runs under mpiexec and reduces gradients."""
import re

from mpi_util import ROOT, run_mpi


def test_readme_example_runs_on_two_ranks(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    code = code.replace("print(comm.ledger.by_phase())",
                        "from mpi_util import emit\nemit({'phases': comm.ledger.by_phase(), "
                        "'first': float(next(net.parameters()).data.ravel()[0])})")
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    results = run_mpi(2, script, timeout=120)
    assert results[0]["first"] == results[1]["first"]  # replicas agree
    for r in results:
        assert r["phases"]["grad-allreduce"]["messages_sent"] > 0
    assert "print(comm.ledger.by_phase())" in text
    assert re.search(r"^mpiexec -n 4 python scripts/compare.py|&& mpiexec -n 4 python scripts/compare.py$", text, re.M)
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
