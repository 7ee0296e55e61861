"""`Adam` and `AdamW` (decoupled weight decay): PyTorch's update rules."""
from __future__ import annotations

import numpy as np

from ..autograd.workspace import scratch
from .optimizer import Optimizer, check_number


class Adam(Optimizer):
    r"""``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *, maximize=False)``.

    For each parameter with a gradient, at step t (counted per parameter), as
    ``torch.optim.Adam``:

    .. math::
        g &= \nabla + \lambda \theta \quad (\text{AdamW instead: } \theta = \theta (1 - \gamma \lambda)) \\
        m &= m + (1 - \beta_1)(g - m), \quad v = \beta_2 v + (1 - \beta_2) g^2 \\
        \theta &= \theta - \frac{\gamma}{1 - \beta_1^t} \cdot
                  \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}

    (with amsgrad, ``v`` in the denominator is the running maximum ``max_exp_avg_sq``).
    State per parameter: ``step`` (int), ``exp_avg``, ``exp_avg_sq`` (arrays). Updates
    ``p.data`` in place.
    """

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 maximize: bool = False):
        betas = tuple(betas) if isinstance(betas, (tuple, list)) else betas
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _check_hyperparameters(self, group: dict) -> None:
        name = type(self).__name__
        for option in ("lr", "eps", "weight_decay"):
            check_number(name, option, group[option])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{name}: betas must be a pair of numbers in [0, 1) (got betas={betas!r})")
        for i, beta in enumerate(betas):
            check_number(name, f"betas[{i}]", beta, below_one=True)

    def step(self) -> None:
        self._check_grads()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p, g in self._params_with_grad(group):
                g = -g if group["maximize"] else g
                state = self.state.setdefault(p, {})
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(p.data)
                    state["exp_avg_sq"] = np.zeros_like(p.data)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = np.zeros_like(p.data)
                state["step"] += 1
                t = state["step"]
                shape = p.shape
                if wd != 0:
                    if self._decoupled:
                        p.data *= 1 - lr * wd
                    else:  # g + wd * p
                        g = np.add(g, np.multiply(p.data, wd, out=scratch("adam.decay", shape, p.dtype)),
                                   out=scratch("adam.grad", shape, np.result_type(g, p.data)))
                m, v = state["exp_avg"], state["exp_avg_sq"]
                tmp = scratch("adam.tmp", shape, np.result_type(g, m))  # each product below, in turn
                m += np.multiply(np.subtract(g, m, out=tmp), 1 - beta1, out=tmp)  # torch's lerp_
                v *= beta2
                v += np.multiply(np.multiply(g, 1 - beta2, out=tmp), g, out=tmp)
                if group["amsgrad"]:
                    np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                    v = state["max_exp_avg_sq"]
                step_size = lr / (1 - beta1 ** t)
                denom = np.sqrt(v, out=scratch("adam.denom", shape, v.dtype))  # sqrt(v) / sqrt(1 - b2^t) + eps
                denom /= (1 - beta2 ** t) ** 0.5
                denom += eps
                p.data -= np.divide(np.multiply(m, step_size, out=tmp), denom, out=tmp)


class AdamW(Adam):
    r"""``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)``:
    Adam with decoupled weight decay, :math:`\theta \leftarrow \theta (1 - \gamma \lambda)`
    before the Adam step instead of adding :math:`\lambda \theta` to the gradient (as
    ``torch.optim.AdamW``)."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
