"""The backward walk: every node reachable from the root, newest first (creation order is
a topological order: an op's inputs always exist before it, so PyTorch's order too),
adding (``+``) what each node's backward returns into its inputs' gradients. A leaf's
gradient is complete once every node that consumed it has been walked: then its hooks
run, the total is added to ``.grad`` and its post-accumulate hooks fire (DDP launches a
bucket from there while backward goes on).
"""
from __future__ import annotations

import sys

import numpy as np

from .graph import unbroadcast


def run_backward(root, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Hand `grad` (root's shape) down the graph that produced `root`, into every leaf."""
    if root._node is _FREED:
        raise RuntimeError(_FREED_MESSAGE)
    if root._node is None:  # backward on a leaf itself
        _accumulate_leaf(root, grad)
        return
    order, leaf_uses = _newest_first(root)
    grads = {id(root): grad}
    for t in order:
        node = t._node
        in_grads, complete = _node_backward(t, node, grads.pop(id(t), None)), []
        for parent, pg in zip(node.parents, in_grads):
            if parent is None:
                continue
            key = id(parent)
            if pg is not None:
                data = parent.data
                pg = np.asarray(pg, dtype=data.dtype)
                if pg.shape != data.shape:
                    pg = _sum_to_input_shape(pg, parent, node)
                earlier = grads.get(key)
                grads[key] = pg if earlier is None else earlier + pg  # used twice: both count
            if parent._node is None:  # a leaf: complete once its last consumer is walked
                uses = leaf_uses[key] = leaf_uses[key] - 1
                if not uses and key in grads:
                    complete.append(parent)
        in_grads = pg = None  # the walk lets go of them: a leaf may then take its array as is
        for leaf in complete:
            _accumulate_leaf(leaf, grads.pop(id(leaf)))  # hooks fire early
        if not retain_graph:
            t._node = _FREED  # free the graph as we go (saved arrays go with the node)


def _newest_first(root):
    """The non-leaf tensors reachable from `root`, newest node first, and for each leaf
    (by id) how many node inputs refer to it: its gradient is complete when all of them
    have been walked. An explicit stack, no recursion: graphs may be thousands deep."""
    order, leaf_uses, seen, stack = [root], {}, {id(root)}, [root]
    while stack:
        for p in stack.pop()._node.parents:
            if p is None:
                continue
            key = id(p)
            if p._node is None:
                leaf_uses[key] = leaf_uses.get(key, 0) + 1
            elif key not in seen:
                if p._node is _FREED:  # checked before any gradient moves: all or nothing
                    raise RuntimeError(_FREED_MESSAGE)
                seen.add(key)
                stack.append(p)
                order.append(p)
    order.sort(key=_creation_order, reverse=True)
    return order, leaf_uses


def _creation_order(t):
    return t._node.seq


def _node_backward(t, node, g):
    """The gradients `node`'s backward returns for its inputs, given `t`'s total `g`."""
    if g is None:  # no consumer sent a gradient: still release the leaves' counts
        return (None,) * len(node.parents)
    if t._hooks:
        g = _apply_hooks(t, g)
    if t._retain:
        t.grad = g.copy() if t.grad is None else t.grad + g
    in_grads = node.fn.backward(node.ctx, g)
    if type(in_grads) is not tuple:
        in_grads = (in_grads,)
    if len(in_grads) != len(node.parents):
        _check_gradient_count(in_grads, node)
    return in_grads


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


def _apply_hooks(t, g):
    """`g` through `t`'s hooks in order (callers call it only when `t` has some)."""
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
    if t._hooks:
        g = _apply_hooks(t, g)
    if t.grad is None:  # take `g` itself when nothing else can see it (PyTorch steals it too)
        t.grad = g if _fresh(g) and sys.getrefcount(g) <= _REFS_OF_AN_UNSHARED_ARGUMENT else g.copy()
    else:
        t.grad += g
    if t._post_hooks:
        for h in t._post_hooks:
            h(t)


def _fresh(g):
    """An array that owns its memory (no view of another), writable and C-ordered as a copy is."""
    return type(g) is np.ndarray and g.base is None and g.flags.carray  # carray: C order, writable


def _refcount_of_argument(g):
    return sys.getrefcount(g)


# What getrefcount reports in a function like _accumulate_leaf for an argument nobody else
# holds; one more (another input's gradient, a hook's list, the caller's array) forces a copy.
# 2 on CPython 3.11 (the argument, getrefcount's own); never taken above 2, so that a
# debugger holding frames while this module loads cannot make the test looser.
_REFS_OF_AN_UNSHARED_ARGUMENT = min(_refcount_of_argument(np.empty(1)), 2)
