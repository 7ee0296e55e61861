"""`SGD` with momentum, dampening, Nesterov and weight decay: PyTorch's update rule."""
from __future__ import annotations

import numpy as np

from ..autograd.workspace import scratch
from .optimizer import Optimizer, check_number


class SGD(Optimizer):
    r"""``SGD(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, maximize=False)``.

    For each parameter with a gradient, exactly as ``torch.optim.SGD``:

    .. math::
        g &= \nabla + \lambda \theta \\
        b &= g \text{ (first step)}, \quad b = \mu b + (1 - \tau) g \text{ (later)} \\
        g &= g + \mu b \text{ (nesterov) or } b \\
        \theta &= \theta - \gamma g

    (the momentum buffer ``b`` is only kept when momentum != 0; the first one is the
    undampened gradient, as PyTorch does). Updates ``p.data`` in place.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _check_hyperparameters(self, group: dict) -> None:
        for option in ("lr", "momentum", "dampening", "weight_decay"):
            check_number("SGD", option, group[option])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: Nesterov momentum requires a momentum and zero dampening "
                             f"(got momentum={group['momentum']}, dampening={group['dampening']})")

    def step(self) -> None:
        self._check_grads()
        for group in self.param_groups:
            params = self._params_with_grad(group)
            if group["momentum"] == 0 and group["weight_decay"] == 0 and not group["maximize"]:
                _descend(params, group["lr"], self._largest)  # plain SGD: _update's last line
            else:
                for p, g in params:
                    self._update(p, g, group)

    def _update(self, p, g, group) -> None:
        """One parameter's step with momentum, weight decay or maximize (the rule above)."""
        lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
        wd, nesterov = group["weight_decay"], group["nesterov"]
        g = -g if group["maximize"] else g
        shape, dtype = g.shape, np.result_type(g, p.data)
        if wd != 0:  # g + wd * p, built in scratch buffers (the same arithmetic)
            g = np.add(g, np.multiply(p.data, wd, out=scratch("sgd.decay", shape, p.dtype)),
                       out=scratch("sgd.grad", shape, dtype))
        if mu != 0:
            state = self.state.setdefault(p, {})
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.astype(p.dtype, copy=True)
            else:
                buf *= mu
                buf += np.multiply(g, 1 - tau, out=scratch("sgd.damped", shape, g.dtype))
            if nesterov:  # g + mu * buf
                g = np.add(g, np.multiply(buf, mu, out=scratch("sgd.ahead", shape, buf.dtype)),
                           out=scratch("sgd.nesterov", shape, np.result_type(g, buf)))
            else:
                g = buf
        _descend(((p, g),), lr, self._largest)

    def add_param_group(self, group: dict) -> None:
        super().add_param_group(group)
        # per dtype, elements of the largest parameter: the size of the buffer `_scaled` shares
        self._largest = {}
        for p in (p for g in self.param_groups for p in g["params"]):
            self._largest[p.dtype] = max(self._largest.get(p.dtype, 0), p.size)


def _descend(params, lr, largest) -> None:
    """``p -= lr * g`` for each (parameter, gradient) pair; `largest`: see `_scaled`."""
    for p, g in params:
        p.data -= _scaled(g, lr, largest)


SCRATCH_FROM_BYTES = 1 << 16


def _scaled(g, lr, largest):
    """``g * lr`` in `g`'s dtype. From `SCRATCH_FROM_BYTES` on, in the start of one scratch
    buffer per dtype, of ``largest[dtype]`` elements (g's if more), that every parameter of
    that dtype shares: a new array that large would be handed back to the OS and
    page-faulted in again every step, and one buffer rather than one per shape stays in
    cache from one parameter to the next (the MLP step's SGD: min 241 -> 214 us,
    in-context A/B, 16 rounds). Below, a new array, which costs less than finding the
    buffer (measured: tiny MLP step)."""
    if g.nbytes < SCRATCH_FROM_BYTES:
        return (g * lr).astype(g.dtype, copy=False)  # the product out= would cast, the same values
    size = max(largest.get(g.dtype, 0), g.size)
    return np.multiply(g, lr, out=scratch("sgd.update", (size,), g.dtype)[:g.size].reshape(g.shape))
