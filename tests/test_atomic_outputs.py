"""Files a user keeps: written atomically (an interrupted write leaves the old file and no
temp file), and read back with errors that name the file and the line."""
import json
import os

import numpy as np
import pytest

from minidist import atomic
from minidist.cost.profiles import PROFILES, load_profile, save_profile
from minidist.report.summary import load_run


def _fail_fsync(monkeypatch):
    def failing(fd):
        raise OSError("power cut")

    monkeypatch.setattr(os, "fsync", failing)


@pytest.mark.parametrize("write", [
    lambda p: atomic.write_text(p, "new\n"), lambda p: atomic.write_bytes(p, b"new"),
    lambda p: atomic.write_lines(p, ["new"]), lambda p: atomic.savez(p, a=np.ones(2)),
    lambda p: save_profile(PROFILES["pcie"], p)])
def test_an_interrupted_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, write):
    path = tmp_path / "kept.out"
    path.write_text("old\n")
    _fail_fsync(monkeypatch)
    with pytest.raises(OSError, match="power cut"):
        write(path)
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.out"]
    write(path)  # and without the fault it does replace it
    assert path.read_bytes() != b"old\n"


def test_an_exception_inside_atomic_open_keeps_the_old_file(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(path) as f:
            f.write("half")
            raise RuntimeError("killed while writing")
    assert path.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_written_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_savez_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="'a' holds Python objects"):
        atomic.savez(tmp_path / "x.npz", a=np.array([{}], dtype=object))
    assert not (tmp_path / "x.npz").exists()


HEADER = {"type": "header", "strategies": ["local"], "config": {}}
STEP = {"type": "step", "strategy": "local", "step": 0, "rank": 0}


def _run_file(tmp_path, text):
    path = tmp_path / "run.jsonl"
    path.write_text(text)
    return path


def test_run_reader_names_the_file_and_line_of_a_corrupt_record(tmp_path):
    path = _run_file(tmp_path, "\n".join([json.dumps(HEADER), '{"type": "st', json.dumps(STEP)]) + "\n")
    with pytest.raises(ValueError, match=r"run\.jsonl:2: not a JSON record"):
        load_run(path)
    path = _run_file(tmp_path, json.dumps(HEADER) + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"run\.jsonl:2: expected a JSON object, got list"):
        load_run(path)
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"run\.jsonl: not a text JSONL run file"):
        load_run(path)


def test_run_reader_skips_a_truncated_last_line_and_says_so(tmp_path):
    text = "\n".join([json.dumps(HEADER), json.dumps(STEP), json.dumps(STEP)[:15]])
    with pytest.warns(UserWarning, match=r"run\.jsonl:3: skipped a truncated last line"):
        header, steps = load_run(_run_file(tmp_path, text))
    assert header == HEADER and steps == [STEP]


def test_profile_reader_names_the_file_and_line(tmp_path):
    path = tmp_path / "p.json"
    save_profile(PROFILES["shm"], path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # truncated
    with pytest.raises(ValueError, match=r"p\.json:\d+:\d+: not a valid profile JSON file"):
        load_profile(path)
    path.write_text(text.replace('"alpha":', '"alpha" 1,', 1))
    line = next(i for i, s in enumerate(text.splitlines(), 1) if '"alpha"' in s)
    with pytest.raises(ValueError, match=rf"p\.json:{line}:"):
        load_profile(path)
    path.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match=r"p\.json: not a valid profile"):
        load_profile(path)
