"""README.md stays true: its Python example runs under `minidist run` and prints one
readable per-rank summary, once; its main command is `minidist compare -n 4`."""
import re
import subprocess
import sys

import pytest

from mpi_util import ROOT


@pytest.mark.mpi
def test_readme_example_prints_one_summary_for_all_ranks(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "print_summary(comm, loss)" in code
    script = tmp_path / "train.py"
    # the replicas must agree: every rank writes its first parameter to a file of its own
    script.write_text(code + f"\nopen(f'{tmp_path}/first{{comm.rank}}', 'w').write("
                      "repr(float(next(net.parameters()).data.ravel()[0])))\n")
    proc = subprocess.run([sys.executable, "-m", "minidist.cli", "run", "-n", "2", "--", "python", str(script)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("last loss and what each rank's ledger recorded") == 1, out
    rows = re.findall(r"^\s+([01])\s+(\d+\.\d{4})?\s+grad-allreduce\s+([\d.]+ \w?i?B)\s+([\d.]+ \w?i?B)\s+(\d+)/(\d+)",
                      out, re.M)
    assert [r[0] for r in rows] == ["0", "1"], out
    assert all(int(r[4]) > 0 and int(r[5]) > 0 for r in rows)
    assert len(re.findall(r"^\s+[01]\s+\d+\.\d{4}\s", out, re.M)) == 2  # one loss per rank
    assert (tmp_path / "first0").read_text() == (tmp_path / "first1").read_text()
    assert "{'" not in out  # no raw dicts


def test_readme_main_command_and_ci():
    text = (ROOT / "README.md").read_text()
    assert re.search(r"&& minidist compare -n 4$", text, re.M)
    assert "## Run on a cluster" in text and "minidist run --mpiexec" in text and "--hostfile hosts -n 64" in text
    assert "MINIDIST_PROFILE" in text
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
