"""The labs' own models: MLPs whose BatchNorm placement, activation, depth and affine
switch are options (the library's `MLP` always puts the norm before a ReLU).

``NormMLP(in_features, hidden, out_features, depth, act="relu" | "sigmoid",
placement="before" | "after" | "none", affine=True, rng=0, dtype=np.float64)``: `depth`
hidden blocks, each ``Linear -> BN -> act`` ("before": BN before the activation),
``Linear -> act -> BN`` ("after") or ``Linear -> act`` ("none"), then a ``Linear`` to the
logits. `hidden_linears(net)` lists the blocks' Linear layers (for per-layer gradients).
"""
from __future__ import annotations

import numpy as np

from minidist import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
PLACEMENTS = ("before", "after", "none")


class NormMLP(nn.Sequential):
    def __init__(self, in_features: int, hidden: int, out_features: int, depth: int = 2, *,
                 act: str = "relu", placement: str = "before", affine: bool = True, rng=0,
                 dtype=np.float64):
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)} (got {act!r})")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS} (got {placement!r})")
        if depth < 1:
            raise ValueError(f"NormMLP needs depth >= 1 (got {depth})")
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        layers, width = [], in_features
        for _ in range(depth):
            block = [nn.Linear(width, hidden, rng=gen, dtype=dtype), ACTIVATIONS[act]()]
            if placement != "none":
                norm = nn.BatchNorm1d(hidden, affine=affine, dtype=dtype)
                block.insert(1 if placement == "before" else 2, norm)
            layers += block
            width = hidden
        layers.append(nn.Linear(width, out_features, rng=gen, dtype=dtype))
        super().__init__(*layers)


def hidden_linears(net) -> list:
    """The Linear layers of `net` in order (the blocks', then the output layer)."""
    return [m for m in net.modules() if isinstance(m, nn.Linear)]
