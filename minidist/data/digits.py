"""scikit-learn's bundled 8x8 handwritten digits (1797 images), as images."""
from __future__ import annotations

import numpy as np


def load_digits(flatten: bool = False):
    """The UCI 8x8 digits that ship with scikit-learn (no download).

    Returns ``X`` float32 scaled to [0, 1] (pixel counts 0..16 divided by 16), shaped
    ``(1797, 1, 8, 8)`` (or ``(1797, 64)`` with ``flatten``), and ``y`` int64 in [0, 10).
    Needs scikit-learn: ``pip install -e '.[digits]'``.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:
        raise ImportError("load_digits needs scikit-learn, which is not installed; "
                          "install it with: pip install -e '.[digits]'") from e
    bunch = _sk_load_digits()
    X = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    return (X if flatten else X.reshape(-1, 1, 8, 8)), y
