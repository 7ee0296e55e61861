"""The small models the scripts, labs and tests train: an MLP and a CNN, each with a choice
of normalisation layer.

``norm`` is one of:

* ``"none"``: no normalisation;
* ``"batch"``: `BatchNorm1d` / `BatchNorm2d` (statistics of this rank's shard only);
* ``"sync"``: `SyncBatchNorm` (statistics of the global batch; needs `comm`);
* ``"layer"``: `LayerNorm` (per-sample statistics: no batch dependence at all).

Both take an explicit ``np.random.Generator`` (or a seed) so that every rank builds the
same initial parameters without communicating.
"""
from __future__ import annotations

import numpy as np

from .. import nn

NORMS = ("none", "batch", "sync", "layer")


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else int(rng))


def _check_norm(norm: str, comm) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (got {norm!r})")
    if norm == "sync" and comm is None:
        raise ValueError("norm='sync' needs the communicator: pass comm= (SyncBatchNorm all-reduces "
                         "its statistics across ranks)")


def norm_layer(norm: str, num_features: int, *, comm=None, normalized_shape=None, dtype=np.float32):
    """One normalisation layer over `num_features` channels (None for ``"none"``).

    `normalized_shape` is what LayerNorm normalises over (default: ``num_features``; a CNN
    passes ``(C, H, W)``)."""
    _check_norm(norm, comm)
    if norm == "none":
        return None
    if norm == "layer":
        return nn.LayerNorm(num_features if normalized_shape is None else normalized_shape, dtype=dtype)
    if norm == "sync":
        return nn.SyncBatchNorm(num_features, comm, dtype=dtype)
    return (nn.BatchNorm1d if normalized_shape is None else nn.BatchNorm2d)(num_features, dtype=dtype)


class MLP(nn.Sequential):
    """``MLP(in_features, hidden, out_features, depth=2, norm="none", comm=None, rng=0,
    dtype=np.float32)``: ``depth`` blocks ``Linear -> [norm] -> ReLU`` of width `hidden`,
    then a ``Linear`` to `out_features` logits.

    Shape:
        - Input: ``(N, in_features)``
        - Output: ``(N, out_features)``
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, depth: int = 2,
                 norm: str = "none", comm=None, rng=0, dtype=np.float32):
        _check_norm(norm, comm)
        if depth < 1:
            raise ValueError(f"MLP needs depth >= 1 hidden layers (got {depth})")
        gen = _generator(rng)
        layers, width = [], in_features
        for _ in range(depth):
            layers.append(nn.Linear(width, hidden, rng=gen, dtype=dtype))
            norm_mod = norm_layer(norm, hidden, comm=comm, dtype=dtype)
            if norm_mod is not None:
                layers.append(norm_mod)
            layers.append(nn.ReLU())
            width = hidden
        layers.append(nn.Linear(width, out_features, rng=gen, dtype=dtype))
        super().__init__(*layers)


class SmallCNN(nn.Sequential):
    """``SmallCNN(in_channels=1, num_classes=10, image_size=16, channels=(8, 16),
    norm="none", comm=None, rng=0, dtype=np.float32)``: per entry of `channels`, a block
    ``Conv2d(3x3, padding 1) -> [norm] -> ReLU -> MaxPool2d(2)``, then ``Flatten`` and a
    ``Linear`` to the logits.

    Shape:
        - Input: ``(N, in_channels, image_size, image_size)``
        - Output: ``(N, num_classes)``
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 16,
                 channels=(8, 16), norm: str = "none", comm=None, rng=0, dtype=np.float32):
        _check_norm(norm, comm)
        if image_size % (2 ** len(channels)) != 0:
            raise ValueError(f"image_size={image_size} must be divisible by 2**{len(channels)} "
                             f"(one 2x2 max-pool per block of channels={tuple(channels)})")
        gen = _generator(rng)
        layers, c_in, side = [], in_channels, image_size
        for c_out in channels:
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, rng=gen, dtype=dtype))
            norm_mod = norm_layer(norm, c_out, comm=comm, normalized_shape=(c_out, side, side), dtype=dtype)
            if norm_mod is not None:
                layers.append(norm_mod)
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            c_in, side = c_out, side // 2
        layers += [nn.Flatten(), nn.Linear(c_in * side * side, num_classes, rng=gen, dtype=dtype)]
        super().__init__(*layers)


def build_model(kind: str, *, norm: str = "none", comm=None, rng=0, dtype=np.float32, **sizes):
    """``build_model("mlp" | "cnn", norm=..., comm=..., rng=..., dtype=..., **sizes)``: the
    scripts' switch; `sizes` go to `MLP` (in_features, hidden, out_features, depth) or
    `SmallCNN` (in_channels, num_classes, image_size, channels)."""
    if kind == "mlp":
        return MLP(sizes.pop("in_features", 2), sizes.pop("hidden", 32), sizes.pop("out_features", 3),
                   norm=norm, comm=comm, rng=rng, dtype=dtype, **sizes)
    if kind == "cnn":
        return SmallCNN(norm=norm, comm=comm, rng=rng, dtype=dtype, **sizes)
    raise ValueError(f"model kind must be 'mlp' or 'cnn' (got {kind!r})")
