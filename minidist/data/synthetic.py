"""Synthetic datasets, deterministic from a seed: 2-D `spirals` and `blobs`, and
`synthetic_images`, small 1xHxW pictures of ten shapes at random positions."""
from __future__ import annotations

import numpy as np


def spirals(n_per_class: int = 100, n_classes: int = 3, noise: float = 0.2, seed: int = 0):
    """Interleaved spiral arms (CS231n's toy set): class k's points lie at radius r in
    [0, 1] and angle ``4 (k + r) + noise * N(0, 1)``.

    Returns ``X`` float32 ``(n_per_class * n_classes, 2)`` and ``y`` int64, class-major.
    """
    if n_per_class < 1 or n_classes < 1:
        raise ValueError(f"need n_per_class >= 1 and n_classes >= 1 (got {n_per_class}, {n_classes})")
    rng = np.random.default_rng(seed)
    r = np.tile(np.linspace(0.0, 1.0, n_per_class), n_classes)
    k = np.repeat(np.arange(n_classes), n_per_class)
    t = 4.0 * (k + r) + noise * rng.standard_normal(r.shape)
    X = np.stack([r * np.sin(t), r * np.cos(t)], axis=1).astype(np.float32)
    return X, k.astype(np.int64)


def blobs(n_per_class: int = 100, n_classes: int = 3, n_features: int = 2, std: float = 1.0,
          center_box: tuple[float, float] = (-10.0, 10.0), seed: int = 0):
    """Gaussian clusters: class centres drawn uniformly from `center_box` in each feature,
    points ``centre + std * N(0, I)``.

    Returns ``X`` float32 ``(n_per_class * n_classes, n_features)`` and ``y`` int64, class-major.
    """
    if n_per_class < 1 or n_classes < 1 or n_features < 1:
        raise ValueError(f"need positive sizes (got n_per_class={n_per_class}, n_classes={n_classes}, "
                         f"n_features={n_features})")
    rng = np.random.default_rng(seed)
    centers = rng.uniform(center_box[0], center_box[1], size=(n_classes, n_features))
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centers[y] + std * rng.standard_normal((y.size, n_features))
    return X.astype(np.float32), y.astype(np.int64)


IMAGE_CLASSES = ("horizontal bar", "vertical bar", "diagonal \\", "diagonal /", "plus", "cross",
                 "square outline", "disk", "ring", "diamond outline")


def _shape_masks(dx, dy, half, width):
    """Per-class ink masks on offsets (dx, dy) from each image's centre. All arrays
    broadcast as (n, H, W); `half` is the shape's half-size, `width` its stroke."""
    u, v = (dx + dy) / np.sqrt(2), (dx - dy) / np.sqrt(2)  # 45-degree rotated axes
    r = np.hypot(dx, dy)
    box = np.maximum(np.abs(dx), np.abs(dy))
    hbar = (np.abs(dy) <= width) & (np.abs(dx) <= half)
    vbar = (np.abs(dx) <= width) & (np.abs(dy) <= half)
    dbar1 = (np.abs(v) <= width) & (np.abs(u) <= half)
    dbar2 = (np.abs(u) <= width) & (np.abs(v) <= half)
    return (hbar, vbar, dbar1, dbar2, hbar | vbar, dbar1 | dbar2,
            np.abs(box - half * 0.8) <= width * 0.7,
            r <= half * 0.75,
            np.abs(r - half * 0.8) <= width * 0.7,
            np.abs(np.abs(dx) + np.abs(dy) - half) <= width)


def synthetic_images(n: int, size: int = 16, seed: int = 0, noise: float = 0.15):
    """Ten classes of line drawings (`IMAGE_CLASSES`: bars in four orientations, plus,
    cross, square, disk, ring, diamond) at a random position, size, stroke width and
    brightness, with Gaussian pixel noise of std `noise`; labels uniform at random.

    Returns ``X`` float32 ``(n, 1, size, size)`` with values roughly in [0, 1] plus
    noise, and ``y`` int64 ``(n,)`` in [0, 10).
    """
    if n < 0 or size < 8:
        raise ValueError(f"need n >= 0 and size >= 8 (got n={n}, size={size})")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    half = rng.uniform(0.22, 0.34, size=n) * size  # shape half-extent in pixels
    width = rng.uniform(0.04, 0.08, size=n) * size + 0.35
    margin = half + width
    cx = rng.uniform(margin - 0.5, size - 0.5 - margin)
    cy = rng.uniform(margin - 0.5, size - 0.5 - margin)
    brightness = rng.uniform(0.6, 1.0, size=n)
    grid = np.arange(size, dtype=np.float64)
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    masks = _shape_masks(dx, dy, half[:, None, None], width[:, None, None])
    ink = np.choose(y[:, None, None], masks).astype(np.float64)  # pick each image's class mask
    X = ink * brightness[:, None, None] + noise * rng.standard_normal(ink.shape)
    return X[:, None].astype(np.float32), y.astype(np.int64)
