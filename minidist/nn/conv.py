"""`Conv2d`, `MaxPool2d` and `Flatten`: the image layers."""
from __future__ import annotations


import numpy as np

from . import functional as F
from . import init
from .conv_ops import pair
from .linear import add_weight_and_bias
from .module import Module


def _check_image_batch(layer: str, x) -> None:
    if x.ndim != 4:
        raise ValueError(f"{layer} expected 4D input (N, C, H, W) (got {x.ndim}D input of shape {tuple(x.shape)}); "
                         "add a batch axis with x.reshape(1, *x.shape) for a single image")


class Conv2d(Module):
    r"""``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, *,
    rng=None, dtype=np.float32)``: 2-D cross-correlation, as ``torch.nn.Conv2d``.

    .. math:: out(N_i, C_{out_j}) = bias(C_{out_j}) + \sum_k weight(C_{out_j}, k) \star input(N_i, k)

    Shape:
        - Input: ``(N, C_in, H, W)``
        - Output: ``(N, C_out, H_out, W_out)``, with
          ``H_out = floor((H + 2 * padding[0] - kernel_size[0]) / stride[0]) + 1`` (W likewise)

    ``weight`` is ``(out_channels, in_channels, kh, kw)``, from U(-k, k) with
    k = 1 / sqrt(in_channels * kh * kw) as PyTorch's default; ``bias`` ``(out_channels,)``
    from the same range; weight drawn first from `rng` (None: see `init.default_rng`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, *, rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"Conv2d needs positive channel counts (got in_channels={in_channels}, "
                             f"out_channels={out_channels})")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"Conv2d needs kernel_size >= 1, stride >= 1, padding >= 0 (got kernel_size="
                             f"{self.kernel_size}, stride={self.stride}, padding={self.padding})")
        add_weight_and_bias(self, (out_channels, in_channels, *self.kernel_size), bias, dtype, rng)

    def reset_parameters(self, rng: np.random.Generator | None = None) -> None:
        init.linear_layer_(self.weight, self.bias, rng)

    def forward(self, x):
        _check_image_batch("Conv2d", x)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expected input with in_channels={self.in_channels} channels at dim 1 "
                             f"(got input of shape {tuple(x.shape)})")
        kh, kw = self.kernel_size
        ph, pw = self.padding
        if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
            raise ValueError(f"Conv2d input of spatial size {tuple(x.shape[2:])} with padding {self.padding} "
                             f"is smaller than the kernel {self.kernel_size}")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s + ("" if self.bias is not None else ", bias=False")


class MaxPool2d(Module):
    r"""``MaxPool2d(kernel_size, stride=None, padding=0)``: the maximum of each window
    (stride defaults to kernel_size; padding counts as -inf), as ``torch.nn.MaxPool2d``.

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H_out, W_out)``, ``H_out = floor((H + 2 * padding - kernel_size) / stride) + 1``
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"MaxPool2d padding should be at most half of the kernel size "
                             f"(got padding={self.padding}, kernel_size={self.kernel_size})")

    def forward(self, x):
        _check_image_batch("MaxPool2d", x)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Flatten(Module):
    """``Flatten(start_dim=1, end_dim=-1)``: merge dims start_dim..end_dim into one.

    Shape:
        - Input: ``(*, S_start, ..., S_end, *)``
        - Output: ``(*, S_start * ... * S_end, *)``
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        nd = x.ndim
        start = self.start_dim % nd if nd else 0
        end = self.end_dim % nd if nd else 0
        if not (-nd <= self.start_dim < nd and -nd <= self.end_dim < nd) or start > end:
            raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) does not fit "
                             f"a {nd}D input of shape {tuple(x.shape)}")
        shape = x.shape[:start] + (int(np.prod(x.shape[start:end + 1])),) + x.shape[end + 1:]
        return x.reshape(shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
