"""Weight initialisation, as ``torch.nn.init``, but every random one takes an explicit
``rng: np.random.Generator``.

Each function fills ``tensor.data`` in place (keeping its dtype) and returns the tensor.
Values are drawn in float64 and then cast, so float32 and float64 layers built from the
same seed hold the same numbers up to rounding.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor


def _fill(tensor: Tensor, values) -> Tensor:
    tensor.data[...] = values
    return tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for `nonlinearity` (PyTorch's table)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
              "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}; use one of {linear + ('tanh', 'relu', 'leaky_relu', 'selu')}")


def calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field, for a
    weight laid out (out, in, *kernel) as Linear's and Conv2d's."""
    shape = tensor.shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dimensions (got shape {shape})")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out' (got {mode!r})")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, *, rng: np.random.Generator) -> Tensor:
    """Fill with U(a, b)."""
    return _fill(tensor, rng.uniform(a, b, size=tensor.shape))


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", *, rng: np.random.Generator) -> Tensor:
    """Fill with U(-bound, bound), bound = gain * sqrt(3 / fan). With ``a=sqrt(5)`` (what
    Linear and Conv2d use) this is bound = 1 / sqrt(fan_in)."""
    fan = _fan(tensor, mode)
    if fan == 0:
        return tensor  # PyTorch warns and leaves a zero-element tensor alone
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound, rng=rng)


def linear_layer_(weight: Tensor, bias: Tensor | None, rng: np.random.Generator | None = None) -> None:
    """PyTorch's default for Linear and Conv layers (their ``reset_parameters``): weight from
    kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), then the bias from
    the same range (zero range when fan_in is 0). Weight drawn first."""
    rng = default_rng(rng)
    kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound, rng=rng)


_default_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Restart the generator that layers built without ``rng=`` draw from (as
    ``torch.manual_seed``); returns it. It starts at seed 0 in every process, so ranks that
    build the same layers in the same order get the same weights."""
    global _default_generator
    _default_generator = np.random.default_rng(seed)
    return _default_generator


def default_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """The generator a layer initialises from: `rng` itself, or, when None, the module-wide
    default (seeded 0, reseeded by `manual_seed`), which advances with every layer built, so
    two layers of equal shape get different weights, and a script that builds the same
    layers after the same seed gets the same ones."""
    if rng is None:
        return _default_generator
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None (got {type(rng).__name__}); "
                        "make one with np.random.default_rng(seed)")
    return rng
