"""`Tensor`: a NumPy array that remembers how it was made (its `Node`), with `.grad`,
hooks and `backward` (the walk itself is in engine.py).
"""
from __future__ import annotations


import numpy as np

from .engine import run_backward
from .graph import is_grad_enabled, no_grad, unbroadcast  # noqa: F401  (re-exported)

DEFAULT_DTYPE = np.float32


def _as_array(data, dtype=None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    arr = np.asarray(data, dtype=dtype)  # arrays keep the dtype the caller gave
    if dtype is None and arr.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
        arr = arr.astype(DEFAULT_DTYPE)  # Python floats: float32 by default
    return arr


class Tensor:
    """``Tensor(data, requires_grad=False, dtype=None)``.

    ``.data`` is the np.ndarray, ``.grad`` its gradient (np.ndarray or None). Python
    numbers and lists become float32 (integers int64); NumPy arrays keep their dtype.
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "_hooks", "_post_hooks",
                 "_retain", "name", "__weakref__")
    __array_priority__ = 1000  # ndarray op Tensor -> Tensor's reflected operator

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        if requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"only floating tensors can require gradients (got dtype {self.data.dtype}); "
                            "cast the data with .astype(np.float32) first")
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        self._hooks = None
        self._post_hooks = None
        self._retain = False
        self.name = None

    @classmethod
    def _from_array(cls, arr, requires_grad=False):
        t = cls.__new__(cls)
        t.data = arr if isinstance(arr, np.ndarray) else np.asarray(arr)
        t.grad = None
        t.requires_grad = requires_grad
        t._node = None
        t._hooks = None
        t._post_hooks = None
        t._retain = False
        t.name = None
        return t

    # ---- properties -------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._node is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        return self.data.item()

    def detach(self) -> "Tensor":
        return Tensor._from_array(self.data)

    def zero_grad(self):
        self.grad = None

    def retain_grad(self):
        """Keep ``.grad`` on a non-leaf tensor after backward."""
        self._retain = True

    # ---- hooks ------------------------------------------------------------------
    def register_hook(self, hook):
        """``hook(grad) -> new grad or None``, called with this tensor's total gradient of
        the backward pass, before it is accumulated or propagated. Returns a handle with
        ``.remove()``."""
        if not self.requires_grad:
            raise RuntimeError(f"cannot register a hook on a tensor that does not require grad "
                               f"(shape {self.shape}, dtype {self.dtype}); create it with "
                               "requires_grad=True or hook a tensor computed from one")
        if self._hooks is None:
            self._hooks = []
        return _Handle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """``hook(tensor)``, called on a leaf once its ``.grad`` holds this pass's whole
        contribution (as in PyTorch)."""
        if not self.is_leaf or not self.requires_grad:
            raise RuntimeError(f"post-accumulate-grad hooks are only for leaf tensors that require grad "
                               f"(this one has shape {self.shape}, is_leaf={self.is_leaf}, "
                               f"requires_grad={self.requires_grad}); use register_hook for "
                               "intermediate tensors")
        if self._post_hooks is None:
            self._post_hooks = []
        return _Handle(self._post_hooks, hook)

    # ---- backward ---------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        `grad` defaults to 1 for a one-element tensor; otherwise it must be given with
        this tensor's shape.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: no leaf "
                               "with requires_grad=True was used to compute it")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor "
                                   f"(got shape {self.shape}); pass grad= of that shape")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"gradient shape {grad.shape} does not match tensor shape {self.shape}")
        run_backward(self, grad, retain_graph)

    # Operators (+ - * / ** @, [], .sum(), .mean(), .max(), .reshape(), .T, .exp(), ...) are
    # attached by operators.py, one line each, beside the ops they call: ops imports
    # Tensor, and Tensor imports no op.


class _Handle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook
        hooks.append(hook)

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)

