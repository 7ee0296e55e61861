"""Reading and writing MNIST's IDX format (``train-images-idx3-ubyte[.gz]``).

An IDX file is: two zero bytes, a type code byte, the number of dimensions, then each
dimension as a big-endian uint32, then the values in C order, big-endian.
"""
from __future__ import annotations

import gzip
import os

import numpy as np

_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {t.newbyteorder("="): code for code, t in _TYPES.items()}  # keyed by native dtype


def _open(path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed, detected from its first bytes) into an
    array of its shape, in the native byte order (uint8 for MNIST images and labels)."""
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise ValueError(f"{os.fspath(path)!r} is not an IDX file: its magic number is {raw[:4].hex() or 'empty'}, "
                         f"expected 0000TTNN with type TT in {[f'{c:02x}' for c in _TYPES]}; "
                         "give the decompressed MNIST file or the .gz as downloaded")
    dtype, ndim = _TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{os.fspath(path)!r}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{os.fspath(path)!r}: IDX shape {shape} of {dtype.name} needs {expected} bytes, "
                         f"the file has {len(raw)}; it is truncated or not an IDX file")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write `array` (uint8, int8, int16, int32, float32 or float64) as an IDX file;
    gzip-compressed when `compress`, or by default when the path ends in ``.gz``."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"IDX cannot hold dtype {array.dtype}; cast to one of uint8, int8, int16, "
                        "int32, float32, float64")
    if array.ndim > 255:
        raise ValueError(f"IDX holds at most 255 dimensions (got {array.ndim})")
    body = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
            + np.ascontiguousarray(array, dtype=_TYPES[code]).tobytes())
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(body)
