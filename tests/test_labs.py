"""The labs (labs/NN_*.py): each runs on tiny settings (--tiny, two seeds) and must print a
verdict computed from its numbers, write the same verdict to --json and draw a valid PNG.
Single-process labs run in this process; the others under mpiexec on 2 ranks. Some
numbers are checked against closed forms derived here, independently of the labs' code,
and the verdict helper is checked to follow the numbers it is given."""
import importlib.util
import json
import sys

import numpy as np
import pytest

from mpi_util import ROOT, check, launch

LABS = ROOT / "labs"
sys.path.insert(0, str(LABS))  # the labs import common, plots, measure, models
SINGLE = ["03_bn_placement", "04_affine_fold", "05_deep_sigmoid", "10_dp_vs_ddp_projection"]
MPI = ["01_norm_axes", "02_tiny_batch", "06_dp_rank0", "07_dp_root_loss", "08_hub_vs_dp", "09_ring_allreduce"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"lab_{name}", LABS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_lab_output(result: dict, stdout: str, out_dir) -> None:
    word = result["verdict"]["word"]
    assert word in ("holds", "does not hold") or word.startswith("holds only when "), word
    assert result["verdict"]["text"] in stdout and f"Verdict: the claim {word}." in stdout
    assert result["verdict"]["checks"] and all("numbers" in c for c in result["verdict"]["checks"])
    pngs = sorted(out_dir.glob("*.png"))
    assert pngs and [str(p) for p in pngs] == sorted(result["plots"])
    import matplotlib.pyplot as plt
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        image = plt.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def run_single(name, tmp_path, capsys) -> dict:
    out = tmp_path / "png"
    load(name).main(["--tiny", "--seeds", "2", "--json", str(tmp_path / "r.json"), "--out", str(out)])
    result = json.loads((tmp_path / "r.json").read_text())
    assert_lab_output(result, capsys.readouterr().out, out)
    return result


@pytest.fixture(scope="module")
def mpi_results(tmp_path_factory):
    """Each MPI lab once, on 2 ranks: {name: result JSON} (launched lazily)."""
    cache = {}

    def get(name):
        if name not in cache:
            folder = tmp_path_factory.mktemp(name)
            proc = check(launch(2, LABS / f"{name}.py", "--tiny", "--seeds", "2", "--json", folder / "r.json",
                                "--out", folder / "png", mpi4py=False, timeout=180))
            result = json.loads((folder / "r.json").read_text())
            assert_lab_output(result, proc.stdout, folder / "png")
            cache[name] = result
        return cache[name]
    return get


@pytest.mark.parametrize("name", SINGLE)
def test_single_process_lab_runs_and_concludes(name, tmp_path, capsys):
    run_single(name, tmp_path, capsys)


@pytest.mark.mpi
@pytest.mark.parametrize("name", MPI)
def test_mpi_lab_runs_and_concludes(name, mpi_results):
    assert mpi_results(name)["world_size"] == 2


# ---- numbers against closed forms derived here ------------------------------------------------
def ring_sent(count: int, size: int, rank: int) -> int:
    """Elements rank `rank` sends in a ring all-reduce of `count` elements: every chunk of
    np.array_split but its own (reduce-scatter) and but the next rank's (all-gather)."""
    chunks = [len(c) for c in np.array_split(np.empty(count), size)]
    return 2 * count - chunks[rank] - chunks[(rank + 1) % size]


@pytest.mark.mpi
def test_ring_lab_bytes_and_schedule(mpi_results):
    result = mpi_results("09_ring_allreduce")
    elements = result["config"]["elements"]
    for row in result["measured"]:
        n = row["size"]
        assert row["sent"] == [4 * ring_sent(elements, n, r) for r in range(n)]
    assert result["library_vs_replay"] == [0.0, 0.0]
    last = result["schedule"][-1]["after"]
    assert all(chunk == [0, 1, 2, 3] for rank in last for chunk in rank)  # N=4: everyone has every sum
    assert len(result["schedule"]) == 6 and {m["chunk"] for m in result["schedule"][0]["moves"]} == {0, 1, 2, 3}
    big = result["projected"][-1]
    assert big["size"] == 1024 and big["fraction"] == pytest.approx(2 * 1023 / 1024, abs=1e-3)


@pytest.mark.mpi
def test_dp_rank0_lab_trend(mpi_results):
    result = mpi_results("06_dp_rank0")
    rows = {(r["strategy"], r["size"]): r for r in result["measured"]}
    dp = rows["dp", 2]
    assert dp["rank0_bytes"] == dp["rank1_bytes"]  # N = 2: rank 0 is no bottleneck
    for p in result["projected"]:
        if p["strategy"] == "dp":  # rank 0 exchanges with N-1 others what each other rank exchanges once
            assert p["rank0_bytes"] == (p["size"] - 1) * p["other_bytes"]
    assert result["verdict"]["word"] == "holds only when N >= 3"


@pytest.mark.mpi
def test_dp_root_lab_moves_the_outputs(mpi_results):
    result = mpi_results("07_dp_root_loss")
    c = result["config"]
    root = next(r for r in result["rows"] if r["strategy"] == "dp-root")
    assert root["rank0_phases"]["output-gather"] == c["batch"] * c["outputs"] * 4  # N = 2: one rank's logits
    assert "output-gather" not in next(r for r in result["rows"] if r["strategy"] == "dp")["rank0_phases"]


@pytest.mark.mpi
def test_hub_lab_who_updates(mpi_results):
    rows = {r["strategy"]: r for r in mpi_results("08_hub_vs_dp")["measured"]}
    assert rows["dp"]["updating_ranks"] == 1 and rows["hub"]["updating_ranks"] == rows["ddp"]["updating_ranks"] == 2
    assert rows["dp"]["other_optimizer"] == 0 and rows["hub"]["other_optimizer"] == rows["hub"]["rank0_optimizer"] > 0
    assert rows["dp"]["rank0_phases"]["param-broadcast"] == rows["hub"]["rank0_phases"]["grad-broadcast"]


def test_folding_is_exact_in_float64(tmp_path, capsys):
    result = run_single("04_affine_fold", tmp_path, capsys)
    assert max(result["folding"]["into_next"] + result["folding"]["into_previous"]) < 1e-12


def test_projection_crossover_is_the_first_n():
    lab = load("10_dp_vs_ddp_projection")
    proj = lab.Projection(25_000_000, "ib-hdr", 0.0)
    for factor in (2, 10):
        n = proj.crossover(factor)
        assert proj.at(n)["ratio"] >= factor > proj.at(n - 1)["ratio"]
        assert all(proj.at(m)["ratio"] < factor for m in range(2, n))


# ---- the verdict follows the numbers --------------------------------------------------------
def test_verdict_words():
    import common
    C = common.Check
    assert common.verdict([C("a", True, "1"), C("b", True, "2", when="x")])["word"] == "holds"
    assert common.verdict([C("a", False, "1"), C("b", True, "2", when="x")])["word"] == "does not hold"
    assert common.verdict([C("b", False, "2", when="x"), C("b", False, "3", when="y")])["word"] == "does not hold"
    mixed = common.verdict([C("b", True, "2", when="x"), C("c", False, "3", when="x"), C("b", True, "4", when="y"),
                            C("b", False, "5", when="z")])
    assert mixed["word"] == "holds only when y" and "Mixed evidence: it fails when x; z." in mixed["text"]


def test_rank0_verdict_needs_a_growing_ratio():
    lab = load("06_dp_rank0")
    flat = [{"size": n, "strategy": "dp", "rank0_bytes": 100.0, "other_bytes": 100.0, "rank1_bytes": 100.0,
             "predicted_rank0_bytes": 100.0, "predicted_other_bytes": 100.0, "rank0_peak": 2.0, "other_peak": 1.0}
            for n in (2, 3, 4)]
    projected = [{"size": 8, "strategy": "dp", "rank0_bytes": 100.0, "other_bytes": 100.0, "rank0_peak": 2.0,
                  "other_peak": 1.0}]
    result = lab.conclude(flat, projected)
    assert result["word"] == "does not hold" and "N=4: 1.00x" in result["text"]


def test_every_lab_is_run_documented_and_taught():
    import lab_notes
    import run_all
    files = sorted(p.name for p in LABS.glob("[0-9][0-9]_*.py"))
    assert files == [f"{n}.py" for n in sorted(SINGLE + MPI)]
    assert sorted(script for script, _ in run_all.LABS.values()) == files
    for number, (script, _) in run_all.LABS.items():
        notes = lab_notes.NOTES[number]
        assert 3 <= len(notes["questions"]) <= 5 and notes["look"]
        page = ROOT / "docs" / "labs" / f"{notes['page']}.md"
        text = page.read_text()  # written by labs/make_docs.py from a run
        assert "Verdict: the claim " in text and f"python labs/{script}" in text
        assert (page.parent / "img" / script.replace(".py", ".png")).read_bytes()[:8] == PNG_SIGNATURE
