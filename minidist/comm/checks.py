"""Argument checks shared by the collectives, and the array_split chunk layout.

Every check runs before the first message and depends only on arguments that every rank
passes alike (dtype, contiguity, root, op, algorithm), so a bad call raises the same error
on every rank instead of leaving some ranks waiting for a message that never comes.
"""
from __future__ import annotations

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64))
# The ring collectives (ring.py, ring_nonblocking.py) also take float16: DDP's fp16 hook
# reduces in float16, as PyTorch's fp16_compress_hook does. Each addition is rounded to
# float16, so a sum over N ranks carries about N half-precision roundings.
RING_DTYPES = SUPPORTED_DTYPES + (np.dtype(np.float16),)

# op name -> the ufunc that combines two partial results (in place: ufunc(a, b, out=a)).
# "mean" sums, then the collective divides once by the number of ranks.
REDUCE_UFUNCS = {"sum": np.add, "mean": np.add, "max": np.maximum, "min": np.minimum}


def check_array(x, name: str = "x", writable: bool = True,
                dtypes: tuple = SUPPORTED_DTYPES) -> np.ndarray:
    """`x` must be a C-contiguous NumPy array of one of `dtypes` (`SUPPORTED_DTYPES`, or
    `RING_DTYPES` for the ring collectives), writable if the collective writes into it.
    Returns `x`."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (got {type(x).__name__}); "
                        f"wrap it with np.asarray({name})")
    flags = x.flags  # one flags object for both tests (each .flags builds a new one)
    if x.dtype in dtypes and flags.c_contiguous and (flags.writeable or not writable):
        return x  # the common case, in one test
    if x.dtype not in dtypes:
        names = ", ".join(str(d) for d in dtypes)
        hint = ""
        if x.dtype == np.float16:  # this collective rejects it: say which ones take it
            hint = (" (float16 is taken by the ring collectives only: ring_allreduce, "
                    "ring_reduce_scatter, ring_allgather, RingAllreduce)")
        raise TypeError(f"{name} has unsupported dtype {x.dtype}; supported: {names}{hint}. "
                        f"Cast it first, e.g. {name}.astype(np.float32)")
    if not flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous (shape {x.shape}, strides {x.strides}); "
                         f"MPI buffer calls need contiguous memory: pass np.ascontiguousarray({name})")
    if writable and not flags.writeable:
        raise ValueError(f"{name} is read-only (shape {x.shape}, dtype {x.dtype}) but this "
                         f"collective writes into it; pass a writable copy ({name}.copy())")
    return x


def check_root(root, size: int) -> int:
    """`root` must be an integer rank in [0, size)."""
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)):
        raise TypeError(f"root must be an int rank (got {type(root).__name__} {root!r})")
    if not 0 <= root < size:
        raise ValueError(f"root={root} is outside [0, {size}) for a communicator of size "
                         f"{size}; pick a rank between 0 and {size - 1}")
    return int(root)


def check_op(op: str, dtype) -> np.ufunc:
    """`op` must be a known reduction; "mean" needs a floating dtype. Returns its ufunc."""
    if op not in REDUCE_UFUNCS:
        raise ValueError(f"unknown op {op!r}; expected one of {sorted(REDUCE_UFUNCS)}")
    if op == "mean" and not np.issubdtype(dtype, np.floating):
        raise TypeError(f"op='mean' needs a floating dtype (got {np.dtype(dtype)}): an integer "
                        "mean would have to round; use op='sum' and divide, or cast to float64")
    return REDUCE_UFUNCS[op]


def check_choice(kind: str, value: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {list(choices)}")
    return value


def chunk_bounds(count: int, parts: int) -> list[tuple[int, int]]:
    """``[(start, stop)] * parts``: np.array_split's layout of `count` elements into
    `parts` chunks, the first ``count % parts`` of them one element longer.

    >>> chunk_bounds(7, 3)
    [(0, 3), (3, 5), (5, 7)]
    """
    starts = chunk_starts(count, parts)
    return list(zip(starts[:-1], starts[1:]))


def chunk_starts(count: int, parts: int) -> list[int]:
    """The ``parts + 1`` offsets of the same layout: chunk i is ``[starts[i], starts[i+1])``,
    and chunks lo..hi-1 together are ``[starts[lo], starts[hi])``."""
    q, r = divmod(count, parts)
    return [i * q + (i if i < r else r) for i in range(parts + 1)]


def chunk_size(count: int, parts: int, index: int) -> int:
    """Length of chunk `index` in the array_split layout of `count` over `parts`."""
    q, r = divmod(count, parts)
    return q + (1 if index < r else 0)


def mismatch_error(what: str, rank: int, peer: int, got_bytes: int, expected_bytes: int) -> ValueError:
    """The error a rank raises when a message is not the size the collective expects,
    which means the ranks passed arrays of different sizes or dtypes."""
    return ValueError(f"{what}: rank {rank} received {got_bytes} bytes from rank {peer} but "
                      f"expected {expected_bytes}; every rank must pass an array of the same "
                      "shape and dtype")
