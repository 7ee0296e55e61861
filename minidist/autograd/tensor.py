"""`Tensor`: a NumPy array that remembers how it was made, and `backward`.

Backward is micrograd's: a topological sort of the recorded graph, then a reverse walk
that hands each node the gradient of its output and accumulates (``+=``) what it returns
into its inputs. A leaf's gradient is complete once every node that consumed it has been
walked; at that moment its hooks run, the total is added to ``.grad``, and its
post-accumulate hooks fire (DDP starts communicating a bucket from there while the rest of
backward is still running).
"""
from __future__ import annotations

import heapq

import numpy as np

from .function import is_grad_enabled, no_grad, unbroadcast  # noqa: F401  (re-exported)

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
        if self._node is _FREED:
            raise RuntimeError(_FREED_MESSAGE)
        if self._node is None:  # backward on a leaf itself
            _accumulate_leaf(self, grad)
            return
        pending = _count_consumers(self)
        grads = {id(self): grad}
        ready = [(0, 0, self)]  # heap of (-sequence, tiebreak, tensor): newest node first, as PyTorch
        tiebreak = 1
        while ready:
            t = heapq.heappop(ready)[2]
            node = t._node
            g = grads.pop(id(t), None)
            if g is None:  # no consumer sent a gradient: still release the inputs' counts
                in_grads = (None,) * len(node.parents)
            else:
                g = _apply_hooks(t, g)
                if t._retain:
                    t.grad = g.copy() if t.grad is None else t.grad + g
                in_grads = node.fn.backward(node.ctx, g)
                if not isinstance(in_grads, tuple):
                    in_grads = (in_grads,)
                if len(in_grads) != len(node.parents):
                    _check_gradient_count(in_grads, node)
            for parent, pg in zip(node.parents, in_grads):
                if parent is None:
                    continue
                key = id(parent)
                if pg is not None:
                    pg = np.asarray(pg, dtype=parent.data.dtype)
                    if pg.shape != parent.data.shape:
                        pg = _sum_to_input_shape(pg, parent, node)
                    grads[key] = grads[key] + pg if key in grads else pg  # used twice: both count
                pending[key] -= 1
                if pending[key]:
                    continue
                if parent._node is not None:
                    heapq.heappush(ready, (-parent._node.seq, tiebreak, parent))
                    tiebreak += 1
                elif key in grads:
                    _accumulate_leaf(parent, grads.pop(key))  # complete now: hooks fire early
            if not retain_graph:
                t._node = _FREED  # free the graph as we go (saved arrays go with the node)

    # ---- operators (defined in ops.py) ---------------------------------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __pow__(self, exponent): return ops.pow(self, exponent)
    def __rpow__(self, base): return ops.pow(base, self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __neg__(self): return ops.neg(self)
    def __getitem__(self, index): return ops.getitem(self, index)

    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def reshape(self, *shape): return ops.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)
    def transpose(self, *axes): return ops.transpose(self, (axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes) or None)
    T = property(lambda self: ops.transpose(self, None))
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def relu(self): return ops.relu(self)
    def sigmoid(self): return ops.sigmoid(self)
    def tanh(self): return ops.tanh(self)


# What a walked tensor keeps instead of its node once backward has freed the graph: it is
# not a leaf (`_node is None` would make it look like one and silently swallow gradients).
_FREED = object()
_FREED_MESSAGE = ("backward through a graph a second time: the first backward() freed it (and the "
                  "arrays its ops saved). Pass backward(retain_graph=True) to the first call to "
                  "walk it again, or recompute the forward pass; use .detach() to start a new "
                  "graph from a computed value.")


def _check_gradient_count(in_grads, node):
    """Backward may leave out trailing gradients of inputs that need none (Reshape's shape)."""
    n = len(in_grads)
    if n > len(node.parents) or any(p is not None for p in node.parents[n:]):
        raise RuntimeError(f"{node.fn.__name__}.backward returned {n} gradient(s) for "
                           f"{len(node.parents)} input(s); return one per positional input of "
                           "forward (None where there is none)")


def _sum_to_input_shape(g, parent, node):
    """Sum a broadcast gradient back to its input's shape; a clear error if it is not one."""
    shape = parent.data.shape
    tail = g.shape[g.ndim - len(shape):] if g.ndim >= len(shape) else None
    if tail is None or any(n != 1 and n != m for n, m in zip(shape, tail)):
        i = next(i for i, p in enumerate(node.parents) if p is parent)
        raise RuntimeError(f"{node.fn.__name__}.backward returned a gradient of shape {g.shape} for "
                           f"input {i} of shape {shape}; it must have the input's shape (or a shape "
                           "that broadcasting the input could produce)")
    return unbroadcast(g, shape)


def _count_consumers(root):
    """For every tensor reachable from `root` through recorded nodes, how many node inputs
    refer to it. The walk hands a tensor on only when this count reaches zero, which is
    when its gradient is complete (Kahn's topological order, without recursion)."""
    pending, seen, stack = {}, {id(root)}, [root]
    while stack:
        t = stack.pop()
        for p in t._node.parents:
            if p is None:
                continue
            pending[id(p)] = pending.get(id(p), 0) + 1
            if id(p) not in seen and p._node is not None:
                if p._node is _FREED:  # checked before any gradient moves: all or nothing
                    raise RuntimeError(_FREED_MESSAGE)
                seen.add(id(p))
                stack.append(p)
    return pending


def _apply_hooks(t, g):
    if t._hooks:
        for h in t._hooks:
            new = h(g)
            if new is not None:
                new = np.asarray(new)
                if new.shape != g.shape:
                    raise RuntimeError(f"hook {getattr(h, '__name__', h)!r} returned a gradient of shape "
                                       f"{new.shape} for a tensor of shape {g.shape}; a hook may change "
                                       "the values of a gradient, not its shape")
                g = new
    return g


def _accumulate_leaf(t, g):
    g = _apply_hooks(t, g)
    if t.grad is None:
        t.grad = g.copy()  # g may be shared with another input's gradient
    else:
        t.grad += g
    if t._post_hooks:
        for h in t._post_hooks:
            h(t)


class _Handle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook
        hooks.append(hook)

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


from . import ops  # noqa: E402  (ops imports Tensor; bound after the class exists)
