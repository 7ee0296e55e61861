"""`DataLoader` over in-memory arrays, with samplers a distributed sampler can reuse.

A sampler is any iterable of sample indices (optionally with ``set_epoch(e)`` and
``len()``). The loader only cuts the sampler's index stream into batches
(`batch_slices`) and gathers each batch with one fancy-indexing call per array, so the
distributed sampler in minidist.parallel only has to choose indices.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``range(n)`` for `epoch`: a permutation drawn from
    ``np.random.default_rng((seed, epoch))``, so every epoch differs and every process
    that knows (seed, epoch) draws the same one (as DistributedSampler's seed + epoch)."""
    return np.random.default_rng((int(seed), int(epoch))).permutation(n)


class SequentialSampler:
    """Indices ``0, 1, ..., n - 1``, every epoch."""

    def __init__(self, n: int):
        self.n = int(n)

    def __iter__(self):
        return iter(range(self.n))

    def indices(self) -> np.ndarray:
        return np.arange(self.n)

    def __len__(self):
        return self.n


class RandomSampler:
    """A fresh permutation of ``range(n)`` each epoch (`epoch_permutation`); call
    ``set_epoch(e)`` before each epoch, as with PyTorch's DistributedSampler."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        return epoch_permutation(self.n, self.seed, self.epoch)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.n


def batch_slices(n_indices: int, batch_size: int, drop_last: bool) -> list[slice]:
    """The slices that cut a stream of `n_indices` indices into batches of `batch_size`
    (the last one shorter unless `drop_last`)."""
    stop = (n_indices // batch_size) * batch_size if drop_last else n_indices
    return [slice(i, min(i + batch_size, stop)) for i in range(0, stop, batch_size)]


class DataLoader:
    """``DataLoader(X, y=None, batch_size=1, shuffle=False, seed=0, drop_last=False, sampler=None)``.

    Iterating yields ``(Tensor(X[idx]), y[idx])`` per batch (``y`` as an np.ndarray, what
    ``F.cross_entropy`` and ``F.mse_loss`` take as targets), or just ``Tensor(X[idx])``
    without `y`. ``X`` may also be a tuple of arrays of equal length: then each batch is a
    tuple with the first as a Tensor and the rest as arrays.

    Order: `sampler` when given (any iterable of indices; ``set_epoch`` is forwarded to
    it), else a `RandomSampler(n, seed)` when `shuffle`, else sequential. ``len(loader)``
    is the number of batches per epoch.
    """

    def __init__(self, X, y=None, batch_size: int = 1, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, sampler=None):
        arrays = tuple(X) if isinstance(X, tuple) else (X,)
        if y is not None:
            arrays += (y,)
        self.arrays = tuple(a.data if isinstance(a, Tensor) else np.asarray(a) for a in arrays)
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays):
            if len(a) != n:
                raise ValueError(f"all arrays must have the same length (array 0 has {n} samples, "
                                 f"array {i} has {len(a)})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (got {batch_size})")
        if sampler is not None and shuffle:
            raise ValueError("give either sampler= or shuffle=True, not both (the sampler decides the order)")
        self.n, self.batch_size, self.drop_last = n, int(batch_size), bool(drop_last)
        self.single = y is None and not isinstance(X, tuple)
        self.sampler = sampler if sampler is not None else (
            RandomSampler(n, seed) if shuffle else SequentialSampler(n))

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle of `epoch` (forwarded to the sampler, if it has one)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _indices(self) -> np.ndarray:
        if hasattr(self.sampler, "indices"):
            return np.asarray(self.sampler.indices(), dtype=np.int64)
        return np.fromiter(iter(self.sampler), dtype=np.int64)

    def __len__(self):
        n = len(self.sampler) if hasattr(self.sampler, "__len__") else self.n
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        indices = self._indices()
        for s in batch_slices(len(indices), self.batch_size, self.drop_last):
            idx = indices[s]
            batch = tuple(a[idx] for a in self.arrays)
            x = Tensor(batch[0])
            yield x if self.single else (x,) + batch[1:]
