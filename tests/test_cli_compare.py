"""`minidist compare -n 2` and `-n 3` end to end: separate run folders, a self-contained
report.html whose tables hold the run's numbers, plots whose series match the tables."""
import base64
import json
import os
import platform
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from minidist.report import load_run, strategy_rows
from mpi_util import ROOT

pytestmark = pytest.mark.mpi
FLAGS = ["--steps", "3", "--samples", "150", "--hidden", "8", "--strategies", "dp,hub,ddp"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{N: (run folder, stdout)} of two runs started in one working folder."""
    cwd = tmp_path_factory.mktemp("cwd")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = {}
    for n, batch in ((2, 24), (3, 25)):
        proc = subprocess.run([sys.executable, "-m", "minidist.cli", "compare", "-n", str(n), *FLAGS,
                               "--batch", str(batch)], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        last = proc.stdout.strip().splitlines()[-1]
        assert last.startswith("run folder: "), proc.stdout
        done[n] = (cwd / last.removeprefix("run folder: "), proc.stdout)
    return done


class Page(HTMLParser):
    """The tags, images and tables of a page (cell text, row by row)."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.images, self.tables, self.items, self._cell = [], [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th", "li"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None
        elif tag == "li":
            self.items.append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _md_tables(text):
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [re.sub(r"[`*]", "", c.strip()) for c in line.strip().strip("|").split("|")]
            if current is None:
                current = []
                tables.append(current)
            if not set(line) <= set("|-"):
                current.append(cells)
        else:
            current = None
    return tables


def test_run_folders_are_kept_apart(runs):
    (two, _), (three, _) = runs[2], runs[3]
    assert two != three and two.parent == three.parent
    for n, folder in ((2, two), (3, three)):
        header, _ = load_run(folder / "run.jsonl")
        assert header["world_size"] == n
        for name in ("report.md", "report.html", "training.png", "per_rank.png", "projection.png"):
            assert (folder / name).stat().st_size > 1000, name


@pytest.mark.parametrize("n", [2, 3])
def test_html_is_self_contained_and_holds_every_table(runs, n):
    folder = runs[n][0]
    page = Page((folder / "report.html").read_text())
    markdown = (folder / "report.md").read_text()
    assert len(page.images) == markdown.count("](") > 0
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object")
        assert not any(str(v).startswith(("http:", "https:", "//")) for v in attrs.values())
    for table in _md_tables(markdown):
        assert table in page.tables  # same header and same cells, every row


def test_html_starts_with_configuration_environment_and_findings(runs):
    folder = runs[3][0]
    header, steps = load_run(folder / "run.jsonl")
    page = Page((folder / "report.html").read_text())
    settings, env = dict(map(tuple, page.tables[0][1:])), dict(map(tuple, page.tables[1][1:]))
    assert settings["batch"] == "25" and settings["shards"] == "[9, 8, 8]"
    assert re.search(r"MPICH|Open MPI", env["MPI library"]) and env["ranks"] == "3"
    assert env["Python"] == platform.python_version() and env["NumPy"] == np.__version__
    threshold = os.environ.get("MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD", str(512 << 10))  # mpich.py's default
    assert env["MPI settings"] == (f"MPIR_CVAR_CH4_IPC_CMA_P2P_THRESHOLD={threshold}"
                                   if env["MPI library"].startswith("MPICH") else "none (not MPICH)")
    assert 3 <= len(page.items) <= 5
    worst = max(r["max_param_diff"] for r in steps if r["strategy"] != "local")
    assert any(f"equal the local reference to {worst:.1e}" in s for s in page.items), page.items
    rows = {r["strategy"]: r["ranks"] for r in strategy_rows(header, steps)}
    moved = lambda k: k["bytes_sent"] + k["bytes_received"]  # noqa: E731
    ratios = {s: moved(ks[0]) / max(moved(k) for k in ks[1:]) for s, ks in rows.items() if s != "local"}
    top = max(ratios, key=ratios.get)
    assert any(f"{ratios[top]:.1f}x the bytes of any other rank under {top}" in s for s in page.items)


def test_plot_series_match_the_tables(runs):
    folder = runs[3][0]
    header, steps = load_run(folder / "run.jsonl")
    tables = _md_tables((folder / "report.md").read_text())
    final = {row[0]: row[1] for row in tables[0][1:]}
    training = json.loads((folder / "training.json").read_text())
    for name, curve in training["loss"].items():
        assert f"{curve['loss'][-1]:.6f}" == final[name]
    assert training["tolerance"] == 1e-10
    per_rank = json.loads((folder / "per_rank.json").read_text())
    cost = {(row[0], int(row[1])): row for row in tables[1][1:]}
    for i, name in enumerate(per_rank["strategies"]):
        for rank, kib in enumerate(per_rank["kib_moved"][i]):
            row = cost[(name, rank)]
            sent, received = (float(c.split()[0]) * {"B": 1, "KiB": 1024}[c.split()[1]] for c in row[2:4])
            assert kib * 1024 == pytest.approx(sent + received, rel=0.01)
            assert f"{per_rank['comm_ms'][i][rank]:.2f}" == row[5]
    projection = json.loads((folder / "projection.json").read_text())
    proj_table = next(t for t in tables if t[0][:3] == ["strategy", "ranks", "comm time"])
    for row in proj_table[1:]:
        series = projection[row[0]]
        seconds = series["seconds"][series["ranks"].index(int(row[1]))]
        assert f"{seconds * 1e3:.3f} ms" == row[2]


def test_the_report_reads_well_in_a_real_browser(runs):
    chromium = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
    if chromium is None:
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install -y chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -e '.[test]'")
    folder = runs[3][0]
    errors = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((folder / "report.html").resolve().as_uri(), wait_until="load")
        widths = page.evaluate("""() => Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)""")
        too_wide = page.evaluate("""() => Array.from(document.querySelectorAll('body *'))
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName)""")
        scroll = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        page.screenshot(path=str(folder / "report-screenshot.png"), full_page=True)
        browser.close()
    assert len(widths) >= 4 and all(w > 0 for w in widths), widths
    assert errors == [] and too_wide == [] and scroll[0] <= scroll[1], (errors, too_wide, scroll)
    assert (folder / "report-screenshot.png").stat().st_size > 10_000
