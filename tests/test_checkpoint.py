"""Checkpoints on one process: bitwise resume, refusal of pickled, truncated and
mismatched files (never executing them), and atomic writes that survive a kill."""
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import minidist
from minidist import nn
from minidist.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidist.optim import SGD

from checkpoint_helpers import build, make_optimizer, state_bytes, train

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_repeats_the_uninterrupted_trajectory_bitwise(tmp_path, optimizer):
    net = build()
    opt = make_optimizer(net.parameters(), optimizer)
    train(net, opt, 0, 6)
    expected = state_bytes(net, opt)

    net = build()
    opt = make_optimizer(net.parameters(), optimizer)
    train(net, opt, 0, 3)
    save_checkpoint(tmp_path / "ck.npz", net, opt, step=3, extra={"epoch": 0})
    minidist.manual_seed(99)  # a fresh start elsewhere: the checkpoint must restore everything
    net = build(seed=7)
    opt = make_optimizer(net.parameters(), optimizer)
    info = load_checkpoint(tmp_path / "ck.npz", net, opt)
    assert info == {"step": 3, "extra": {"epoch": 0}}
    train(net, opt, info["step"], 6)
    assert state_bytes(net, opt) == expected


def test_extra_generators_arrays_and_samplers_come_back(tmp_path):
    from minidist.parallel import DistributedSampler

    rng, sampler = np.random.default_rng(5), DistributedSampler(10, 2, 1, seed=3)
    rng.random(3)
    sampler.set_epoch(4)
    net = build()
    save_checkpoint(tmp_path / "ck.npz", net, None, step=1,
                    extra={"rng": rng, "sampler": sampler, "perm": np.arange(4), "note": "x"})
    following = rng.random(2)
    rng2, sampler2 = np.random.default_rng(0), DistributedSampler(10, 2, 1, seed=3)
    info = load_checkpoint(tmp_path / "ck.npz", build(), None, extra={"rng": rng2, "sampler": sampler2})
    assert info["extra"]["rng"] is rng2 and sampler2.epoch == 4
    np.testing.assert_array_equal(rng2.random(2), following)
    np.testing.assert_array_equal(info["extra"]["perm"], np.arange(4))
    assert info["extra"]["note"] == "x"


def test_extra_of_the_wrong_kind_is_refused_before_anything_changes(tmp_path):
    from minidist.parallel import DistributedSampler

    net = build()
    save_checkpoint(tmp_path / "ck.npz", net, None, step=1,
                    extra={"rng": np.random.default_rng(5), "sampler": DistributedSampler(10, 2, 1, seed=3)})
    fresh = build(seed=9)
    before = [p.data.copy() for p in fresh.parameters()]
    for extra in ({"sampler": np.random.default_rng(0)}, {"rng": DistributedSampler(10, 2, 1, seed=3)}):
        with pytest.raises(CheckpointError, match="was saved as a"):
            load_checkpoint(tmp_path / "ck.npz", fresh, None, extra=extra)
        assert all(np.array_equal(a, p.data) for a, p in zip(before, fresh.parameters()))


def _trained(tmp_path):
    net = build()
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9)
    train(net, opt, 0, 2)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, net, opt, step=2)
    return net, opt, path


def test_mismatched_model_or_optimizer_is_refused_before_any_change(tmp_path):
    _, _, path = _trained(tmp_path)
    wider = nn.Sequential(nn.Linear(3, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(7, 4)).to(np.float64)
    before = wider.state_dict()
    with pytest.raises(CheckpointError, match=r"'0.weight': the file has shape \(6, 3\).*\(7, 3\)"):
        load_checkpoint(path, wider, SGD(wider.parameters(), lr=0.1))
    for key, value in wider.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    as_float32 = build().to(np.float32)
    with pytest.raises(CheckpointError, match="dtype float64, the model has .* float32"):
        load_checkpoint(path, as_float32, None)
    net = build()
    with pytest.raises(CheckpointError, match="the optimizer is Adam, the file's is SGD"):
        load_checkpoint(path, net, make_optimizer(net.parameters(), "adam"))


def test_bad_saved_hyperparameters_are_refused_before_any_change(tmp_path):
    net, opt, _ = _trained(tmp_path)
    opt.param_groups[0]["lr"] = float("nan")  # as if the file had been edited
    save_checkpoint(tmp_path / "nan.npz", net, opt, step=2)
    fresh = build(seed=3)
    before = fresh.state_dict()
    with pytest.raises(CheckpointError, match="optimizer hyper-parameters: SGD: invalid lr=nan"):
        load_checkpoint(tmp_path / "nan.npz", fresh, SGD(fresh.parameters(), lr=0.1, momentum=0.9))
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_truncated_and_foreign_files_are_refused(tmp_path):
    _, _, path = _trained(tmp_path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"{bad.name}.*not a readable minidist checkpoint"):
            load_checkpoint(bad, build(), None)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(2))
    with pytest.raises(CheckpointError, match="no valid minidist metadata"):
        load_checkpoint(plain, build(), None)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.npz", build(), None)


class _Trap:
    """Unpickling this creates the sentinel file: proof that code from the file ran."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_a_malicious_pickled_file_is_refused_and_never_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Trap(str(sentinel))
    npz, raw = tmp_path / "evil.npz", tmp_path / "evil_raw.npz"
    _, _, good = _trained(tmp_path)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(npz, **{**arrays, "model/0.weight": evil})
    raw.write_bytes(pickle.dumps(_Trap(str(sentinel))))
    pickle.loads(pickle.dumps(_Trap(str(tmp_path / "control"))))  # the trap does work when unpickled
    assert (tmp_path / "control").exists()
    for path in (npz, raw):
        with pytest.raises(CheckpointError, match="pickled"):
            load_checkpoint(path, build(), None)
    assert not sentinel.exists()


def test_save_refuses_bad_arguments_before_writing(tmp_path):
    net = build()
    for step in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="step must be an int"):
            save_checkpoint(tmp_path / "a.npz", net, None, step=step)
    with pytest.raises(TypeError, match=r"extra\['f'\] of type builtin_function_or_method cannot be saved"):
        save_checkpoint(tmp_path / "a.npz", net, None, step=0, extra={"f": len})
    assert not (tmp_path / "a.npz").exists()


def test_an_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    net, opt, path = _trained(tmp_path)
    before = path.read_bytes()
    train(net, opt, 2, 3)

    def failing_fsync(fd):
        raise OSError("disk unplugged during fsync")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(CheckpointError, match="disk unplugged"):
        save_checkpoint(path, net, opt, step=3)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert load_checkpoint(path, build(), SGD(build().parameters(), lr=0.1, momentum=0.9))["step"] == 2


WRITER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[2])
    from checkpoint_helpers import build
    from minidist import save_checkpoint

    def slow_fsync(fd):  # the temp file is complete and about to be renamed: stop here
        print("writing", flush=True)
        time.sleep(60)

    os.fsync = slow_fsync
    save_checkpoint(sys.argv[1], build(seed=5), None, step=99)
""")


def test_a_writer_killed_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, build(), None, step=1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(ROOT / "tests")], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # caught mid-write
        proc.kill()
    finally:
        proc.wait(timeout=60)
    net = build(seed=5)
    assert load_checkpoint(path, net, None)["step"] == 1
    reference = build()
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(net.state_dict()[key], value)
