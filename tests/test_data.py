"""Datasets and the DataLoader: determinism, shapes and dtypes, epoch coverage, shuffles,
IDX files."""
import gzip
import importlib.util
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidist import Tensor
from minidist.data import (DataLoader, RandomSampler, batch_slices, blobs, epoch_permutation,
                           load_digits, read_idx, spirals, synthetic_images, write_idx)


# ---- synthetic sets --------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda seed: spirals(50, 3, noise=0.2, seed=seed),
    lambda seed: blobs(40, 4, n_features=3, seed=seed),
    lambda seed: synthetic_images(64, size=16, seed=seed),
])
def test_deterministic_from_seed(make):
    X1, y1 = make(7)
    X2, y2 = make(7)
    X3, _ = make(8)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_spirals_and_blobs_shapes():
    X, y = spirals(30, n_classes=4, noise=0.1, seed=0)
    assert X.shape == (120, 2) and X.dtype == np.float32
    assert y.dtype == np.int64 and np.array_equal(np.bincount(y), [30] * 4)
    assert np.abs(X).max() <= 1.0 + 1e-6  # points on radius r <= 1
    X, y = blobs(25, n_classes=5, n_features=3, std=0.5, seed=1)
    assert X.shape == (125, 3) and X.dtype == np.float32 and y.dtype == np.int64
    # each class sits around its own centre: class means are far apart relative to std
    means = np.stack([X[y == k].mean(axis=0) for k in range(5)])
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(5, dtype=bool)]
    assert gaps.min() > 1.0


@pytest.mark.parametrize("size", [16, 28])
def test_synthetic_images_shapes_and_classes(size):
    X, y = synthetic_images(500, size=size, seed=3, noise=0.1)
    assert X.shape == (500, 1, size, size) and X.dtype == np.float32
    assert y.shape == (500,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    # every image has ink, and images of one class differ (random position / size)
    clean, _ = synthetic_images(500, size=size, seed=3, noise=0.0)
    assert (clean.reshape(500, -1).max(axis=1) > 0.5).all()
    zeros = clean[y == 0]
    assert not np.array_equal(zeros[0], zeros[1])
    # classes are distinguishable on average: class-mean images differ
    means = np.stack([clean[y == k].mean(axis=0).ravel() for k in range(10)])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(10, dtype=bool)]
    assert dist.min() > 0.1


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_per_class"):
        spirals(0)
    with pytest.raises(ValueError, match="size >= 8"):
        synthetic_images(4, size=4)


# ---- loader -------------------------------------------------------------------------------
def _loader_data(n=23):
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return X, np.arange(n, dtype=np.int64)


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_the_dataset_once_per_epoch(shuffle):
    X, y = _loader_data()
    loader = DataLoader(X, y, batch_size=5, shuffle=shuffle, seed=4)
    assert len(loader) == 5
    for epoch in range(2):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == 5 and [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
        xb, yb = batches[0]
        assert isinstance(xb, Tensor) and xb.dtype == np.float32 and isinstance(yb, np.ndarray)
        seen = np.concatenate([b[1] for b in batches])
        assert sorted(seen.tolist()) == list(range(23))
        for xb, yb in batches:  # rows stay paired with their labels
            np.testing.assert_array_equal(xb.data, X[yb])
        if not shuffle:
            np.testing.assert_array_equal(seen, np.arange(23))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 120), batch_size=st.integers(1, 50), drop_last=st.booleans(),
       shuffle=st.booleans(), epoch=st.integers(0, 5))
def test_loader_partitions_any_dataset(n, batch_size, drop_last, shuffle, epoch):
    X, y = _loader_data(n)
    loader = DataLoader(X, y, batch_size=batch_size, shuffle=shuffle, seed=2, drop_last=drop_last)
    loader.set_epoch(epoch)
    labels = [b[1] for b in loader]
    assert len(labels) == len(loader)
    assert all(len(b) == batch_size for b in labels[:-1])
    seen = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    assert len(np.unique(seen)) == len(seen)  # no sample twice in an epoch
    assert len(seen) == ((n // batch_size) * batch_size if drop_last else n)
    if drop_last and labels:
        assert len(labels[-1]) == batch_size


def test_drop_last():
    X, y = _loader_data()
    loader = DataLoader(X, y, batch_size=5, shuffle=True, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    assert all(len(b[1]) == 5 for b in batches)
    assert len(np.unique(np.concatenate([b[1] for b in batches]))) == 20


def test_shuffle_differs_across_epochs_and_repeats_per_epoch():
    X, y = _loader_data(50)
    loader = DataLoader(X, y, batch_size=50, shuffle=True, seed=9)
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        orders.append(next(iter(loader))[1])
    assert not np.array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(orders[0], orders[2])
    other_seed = DataLoader(X, y, batch_size=50, shuffle=True, seed=10)
    assert not np.array_equal(next(iter(other_seed))[1], orders[0])
    np.testing.assert_array_equal(orders[1], epoch_permutation(50, 9, 1))


def test_custom_sampler_and_single_array():
    X, _ = _loader_data(10)
    loader = DataLoader(X, batch_size=3, sampler=[9, 7, 5, 3, 1])
    batches = list(loader)
    assert len(loader) == 2 and all(isinstance(b, Tensor) for b in batches)
    np.testing.assert_array_equal(batches[0].data, X[[9, 7, 5]])
    np.testing.assert_array_equal(batches[1].data, X[[3, 1]])
    sampler = RandomSampler(10, seed=1)
    loader = DataLoader(X, batch_size=10, sampler=sampler)
    loader.set_epoch(3)
    assert sampler.epoch == 3
    assert [s.stop for s in batch_slices(10, 4, drop_last=False)] == [4, 8, 10]


def test_loader_errors():
    X, y = _loader_data(10)
    with pytest.raises(ValueError, match="array 0 has 10 samples, array 1 has 9"):
        DataLoader(X, y[:9], batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        DataLoader(X, y, batch_size=0)


# ---- IDX files -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = tmp_path / ("a.idx" + (".gz" if compress else ""))
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_read_idx_of_hand_made_mnist_files(tmp_path):
    """Bytes laid out by hand as in MNIST's files, independent of write_idx."""
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    (tmp_path / "images-idx3-ubyte").write_bytes(header + images.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "images-idx3-ubyte"), images)
    labels = np.array([7, 2, 1], dtype=np.uint8)
    with gzip.open(tmp_path / "labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + labels.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "labels-idx1-ubyte.gz"), labels)
    ints = np.array([1, -2, 300000], dtype=np.int32)
    (tmp_path / "ints").write_bytes(bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + ints.astype(">i4").tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), ints)


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an IDX file: its magic number is 89504e47"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 0x08, 1]) + (5).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match=r"needs 13 bytes, the file has 10"):
        read_idx(short)
    with pytest.raises(TypeError, match="cannot hold dtype complex128"):
        write_idx(tmp_path / "c", np.zeros(2, dtype=complex))


# ---- scikit-learn digits --------------------------------------------------------------------
def test_load_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"needs scikit-learn.*pip install -e '\.\[digits\]'"):
        load_digits()


def test_load_digits_converts_scikit_learns_arrays(monkeypatch):
    fake = types.ModuleType("sklearn.datasets")
    pixels = np.arange(3 * 64).reshape(3, 64) % 17  # sklearn's 0..16 counts, float64
    fake.load_digits = lambda: types.SimpleNamespace(data=pixels.astype(np.float64), target=np.array([4, 0, 9]))
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)
    X, y = load_digits()
    assert X.shape == (3, 1, 8, 8) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X.reshape(3, 64), pixels / 16.0)
    np.testing.assert_array_equal(y, [4, 0, 9])
    assert load_digits(flatten=True)[0].shape == (3, 64)


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                    reason="scikit-learn not installed (optional: pip install -e '.[digits]')")
def test_load_digits_real_data():
    X, y = load_digits()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= X.min() and X.max() == 1.0 and set(np.unique(y)) == set(range(10))
    assert load_digits(flatten=True)[0].shape == (1797, 64)
