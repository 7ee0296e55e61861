"""`Linear`: y = x W^T + b, initialised as PyTorch does."""
from __future__ import annotations


import numpy as np

from . import functional as F
from . import init
from .module import Module, Parameter


class Linear(Module):
    r"""``Linear(in_features, out_features, bias=True, *, rng=None, dtype=np.float32)``.

    .. math:: y = x W^T + b

    Shape:
        - Input: ``(*, in_features)``
        - Output: ``(*, out_features)``

    ``weight`` is ``(out_features, in_features)`` and drawn from U(-k, k) with
    k = 1 / sqrt(in_features) (PyTorch's ``kaiming_uniform_(a=sqrt(5))``); ``bias`` is
    ``(out_features,)`` from the same U(-k, k). Both come from `rng` (see
    `init.default_rng` for what None means), weight first.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise ValueError(f"Linear needs non-negative sizes (got in_features={in_features}, "
                             f"out_features={out_features})")
        self.in_features, self.out_features = int(in_features), int(out_features)
        add_weight_and_bias(self, (out_features, in_features), bias, dtype, rng)

    def reset_parameters(self, rng: np.random.Generator | None = None) -> None:
        init.linear_layer_(self.weight, self.bias, rng)

    def forward(self, x):
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expected input with last dimension in_features="
                             f"{self.in_features} (got input of shape {tuple(x.shape)})")
        params = self._parameters  # not self.weight: Module.__getattr__ searches three dicts
        return F.linear(x, params["weight"], params["bias"])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def add_weight_and_bias(module, weight_shape: tuple, bias: bool, dtype, rng) -> None:
    """PyTorch's Linear and Conv parameters on `module`: ``weight`` of `weight_shape` and
    ``bias`` of ``weight_shape[0]`` (or None), initialised as their ``reset_parameters``."""
    module.weight = Parameter(np.empty(weight_shape, dtype=dtype))
    if bias:
        module.bias = Parameter(np.empty(weight_shape[0], dtype=dtype))
    else:
        module.register_parameter("bias", None)
    module.reset_parameters(rng)
