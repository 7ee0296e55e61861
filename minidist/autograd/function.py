"""`Function`: an op's forward and backward, side by side.

A subclass defines ``forward(ctx, *arrays, **options) -> array`` and ``backward(ctx, grad)
-> one gradient per positional input`` as static methods on NumPy arrays (``ctx.
save_for_backward`` keeps what backward needs), and is called as ``Op.apply(*tensors)``.
A gradient may have the broadcast output's shape: the engine sums it back to the input's
(`unbroadcast`). A worked example: docs/autograd.md; every op in ops.py is one.
"""
from __future__ import annotations

from .graph import Context, Node, _grad_state, is_grad_enabled, no_grad, unbroadcast  # noqa: F401
from .tensor import Tensor


class Function:
    """An op: ``forward(ctx, *arrays, **options) -> array`` and ``backward(ctx, grad) ->
    one gradient per positional input``, called as ``MyOp.apply(*tensors_or_values)``."""

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        # Runs once per op call: a plain loop, no generators.
        raw, needs, parents, record = [], [], [], False
        for a in args:
            if isinstance(a, Tensor):
                raw.append(a.data)
                if a.requires_grad:
                    needs.append(True)
                    parents.append(a)
                    record = True
                    continue
            else:
                raw.append(a)
            needs.append(False)
            parents.append(None)
        record = record and _grad_state.enabled
        ctx = Context(tuple(needs))
        out = Tensor._from_array(cls.forward(ctx, *raw, **kwargs), record)
        if record:
            out._node = Node(cls, ctx, tuple(parents))
        return out

