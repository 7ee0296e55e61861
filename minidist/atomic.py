"""Files a user keeps, written atomically: all of the new content or all of the old.

Each writer fills a temporary file in the target's own folder (so ``os.replace`` is a
rename on one file system), flushes and fsyncs it, renames it over the target, then
fsyncs the folder so the rename itself survives a crash. A process killed at any point
leaves either the previous file or the complete new one, plus at worst a stray
``.<name>.*.tmp`` (safe to delete). NumPy only; no MPI.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

import numpy as np


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders (Windows): the rename still happened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    """``with atomic_open(path, "w") as f: ...``: `f` is a temporary file beside `path`;
    on a clean exit it is fsynced and renamed over `path`, on an exception removed (and
    `path` left as it was). `mode` is "w" or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb' (got {mode!r})")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:  # owns fd from here: closed whatever happens
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; a kept file gets the usual mode
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_folder(folder)


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, not while threads write
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Replace `path`'s content with `text`, atomically."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path`'s content with `data`, atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_lines(path: str | os.PathLike, lines, encoding: str = "utf-8") -> None:
    """Replace `path`'s content with `lines` (strings, each ended by a newline here)."""
    with atomic_open(path, "w", encoding=encoding) as f:
        for line in lines:
            f.write(line + "\n")


def savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez(path, **arrays)``, atomically, at exactly `path` (no ``.npz`` appended).
    Object arrays are refused: what is saved must load with ``allow_pickle=False``."""
    for name, value in arrays.items():
        if np.asarray(value).dtype.hasobject:
            raise TypeError(f"array {name!r} holds Python objects (dtype object); only numeric, bool "
                            "and string arrays can be saved without pickling")
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
