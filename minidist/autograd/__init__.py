"""The autograd engine: `Tensor`, `Function`, the ops, and a finite-difference checker."""
from .function import Context, Function, is_grad_enabled, no_grad
from .tensor import Tensor
from . import ops, operators  # noqa: F401  (operators: attaches +, -, @, .sum(), ... to Tensor)
from .gradcheck import gradcheck, numeric_grad

__all__ = ["Tensor", "Function", "Context", "no_grad", "is_grad_enabled", "ops",
           "gradcheck", "numeric_grad"]
