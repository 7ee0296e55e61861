"""Sharding: which samples each rank sees.

* `DistributedSampler` splits a dataset for a whole epoch as PyTorch's does: one
  permutation per epoch, the same on every rank, then rank r takes every R-th index from
  r; step t of all ranks together is exactly the global batch a single process with
  batch b*R takes (same seed).
* `shard_bounds` / `local_shard` split one global batch into contiguous rows, the first
  ``B % R`` ranks taking one row more (``np.array_split``'s rule); the comparison uses it.

Uneven shards are weighted by sample count (``average="samples"``), so the averaged
gradient is still the global-batch one.
"""
from __future__ import annotations

import math

import numpy as np

from ..comm.checks import chunk_bounds
from ..data import epoch_permutation


def shard_sizes(n: int, num_replicas: int) -> np.ndarray:
    """Rows each rank gets when `n` rows are split contiguously: ``n // R`` each, plus one
    for the first ``n % R`` ranks (the collectives' `chunk_bounds` layout). Shape:
    ``(num_replicas,)``, int64."""
    _check_num_replicas(num_replicas)
    if n < 0:
        raise ValueError(f"cannot split a negative number of rows (got n={n})")
    return np.array([stop - start for start, stop in chunk_bounds(n, num_replicas)], dtype=np.int64)


def shard_bounds(n: int, num_replicas: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of rank `rank`'s contiguous rows out of `n` (see `shard_sizes`)."""
    _check_rank(rank, num_replicas)
    return chunk_bounds(n, num_replicas)[rank]


def local_shard(batch, comm=None, *, rank: int | None = None, num_replicas: int | None = None):
    """This rank's contiguous rows of a global batch.

    `batch` is one array (or Tensor-like with ``.data``) or a tuple/list of them with the
    same first dimension (e.g. ``(x, y)``); the result has the same structure. The rank and
    the number of ranks come from `comm` (``.rank``, ``.size``) unless given.

    Example::

        x, y = local_shard((x_global, y_global), comm)   # rows start:stop of each
    """
    if comm is not None:
        rank = comm.rank if rank is None else rank
        num_replicas = comm.size if num_replicas is None else num_replicas
    if rank is None or num_replicas is None:
        raise ValueError("local_shard needs a communicator or both rank= and num_replicas=")
    arrays = batch if isinstance(batch, (tuple, list)) else (batch,)
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"local_shard: every array needs the same number of rows (got lengths "
                         f"{[len(a) for a in arrays]})")
    start, stop = shard_bounds(lengths.pop(), num_replicas, rank)
    out = tuple(a[start:stop] for a in arrays)
    return type(batch)(out) if isinstance(batch, (tuple, list)) else out[0]


class DistributedSampler:
    """``DistributedSampler(n, num_replicas, rank, shuffle=True, seed=0, drop_last=False,
    pad=True)``: the indices of a dataset of `n` samples that rank `rank` visits in one
    epoch, as ``torch.utils.data.distributed.DistributedSampler``.

    Every rank draws the same permutation, ``epoch_permutation(n, seed, epoch)`` from
    minidist.data (``arange(n)`` when ``shuffle=False``), then:

    * ``drop_last=True``: the tail is dropped so that every rank gets ``n // R`` indices;
    * ``drop_last=False, pad=True`` (PyTorch's behaviour): the list is padded by repeating
      its start until every rank gets ``ceil(n / R)`` indices, so some samples are seen
      twice in the epoch;
    * ``drop_last=False, pad=False``: nothing is added or removed; the first ``n % R`` ranks
      get one index more. The wrappers weight gradients by sample count, so the average is
      still the global-batch gradient. Check `num_batches` before training: ranks must run
      the same number of steps.

    Rank ``r`` takes positions ``r, r + R, r + 2R, ...`` of the (padded / cut) list.
    Call `set_epoch` at the start of each epoch for a new shuffle.
    """

    def __init__(self, n: int, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, pad: bool = True):
        if n < 0:
            raise ValueError(f"DistributedSampler needs a dataset size n >= 0 (got {n})")
        _check_rank(rank, num_replicas)
        self.n, self.num_replicas, self.rank = int(n), int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last, self.pad = bool(shuffle), int(seed), bool(drop_last), bool(pad)
        self.epoch = 0
        if self.drop_last:
            self.total_size = (self.n // self.num_replicas) * self.num_replicas
        elif self.pad:
            self.total_size = math.ceil(self.n / self.num_replicas) * self.num_replicas
        else:
            self.total_size = self.n
        self.num_samples = int(self.sizes()[self.rank])

    def sizes(self) -> np.ndarray:
        """Indices per rank this epoch, for every rank (all ranks compute the same array)."""
        return shard_sizes(self.total_size, self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use the permutation of `epoch`."""
        self.epoch = int(epoch)

    def global_order(self) -> np.ndarray:
        """The epoch's full index list (padded or cut), the same on every rank; rank r's
        indices are ``global_order()[r::num_replicas]``."""
        if self.shuffle:
            order = epoch_permutation(self.n, self.seed, self.epoch)
        else:
            order = np.arange(self.n)
        if self.total_size <= self.n:
            return order[: self.total_size]
        if self.n == 0:
            raise ValueError("DistributedSampler with pad=True cannot pad an empty dataset")
        reps = math.ceil(self.total_size / self.n)  # pad by wrapping around, as PyTorch
        return np.tile(order, reps)[: self.total_size]

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch (int64 array)."""
        return self.global_order()[self.rank:: self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """How many batches of `batch_size` each rank's loader yields this epoch; raises,
        identically on every rank, when ranks would disagree (a collective would then
        wait forever for the rank that ran out)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        count = (lambda k: k // batch_size) if drop_last else (lambda k: -(-k // batch_size))
        per_rank = sorted({int(count(k)) for k in self.sizes()})
        if len(per_rank) > 1:
            raise ValueError(
                f"ranks would run different numbers of steps ({per_rank}) with n={self.n}, "
                f"num_replicas={self.num_replicas}, batch_size={batch_size}, pad=False: use pad=True, "
                f"drop_last=True, or a batch size for which every rank's share ends in the same batch")
        return per_rank[0]

    def __repr__(self):
        return (f"DistributedSampler(n={self.n}, num_replicas={self.num_replicas}, rank={self.rank}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, pad={self.pad})")


def _check_num_replicas(num_replicas: int) -> None:
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1 (got {num_replicas})")


def _check_rank(rank: int, num_replicas: int) -> None:
    _check_num_replicas(num_replicas)
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}] for num_replicas={num_replicas} (got {rank})")
