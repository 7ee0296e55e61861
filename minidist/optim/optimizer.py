"""`Optimizer`: parameter groups, per-parameter state, and a state_dict of plain values.

As in PyTorch, ``state`` maps each Parameter to a dict of its state (NumPy arrays and
numbers) and ``param_groups`` is a list of dicts holding ``"params"`` and the
hyper-parameters. ``state_dict()`` names parameters by their position across the groups
(0, 1, ...), so it holds only NumPy arrays, numbers and lists: no pickled objects.
"""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from ..autograd import Tensor


def check_number(owner: str, option: str, value, *, below_one: bool = False) -> None:
    """Raise unless `value` is a real, finite number >= 0 (and < 1 with `below_one`):
    TypeError for a non-number (``lr="0.1"``), ValueError for nan, inf or out of range;
    the message names `owner`'s `option` and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {option} must be a number (got {option}={value!r} of type "
                        f"{type(value).__name__}); pass e.g. {option}=0.1, not a string")
    upper = "< 1" if below_one else "finite"
    if not math.isfinite(value) or value < 0 or (below_one and value >= 1):
        raise ValueError(f"{owner}: invalid {option}={value!r} (expected a number >= 0 and {upper})")


class Optimizer:
    def __init__(self, params, defaults: dict):
        if isinstance(params, Tensor):
            raise TypeError("params should be an iterable of Tensors or of dicts (got a single Tensor); "
                            "pass model.parameters() or [tensor]")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list; pass model.parameters()")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add a dict with ``"params"`` and optional hyper-parameters (others default)."""
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor) or not p.requires_grad or not p.is_leaf:
                raise TypeError(f"optimizer can only optimize leaf Tensors that require grad "
                                f"(entry {i} is {type(p).__name__}"
                                f"{'' if not isinstance(p, Tensor) else f' with requires_grad={p.requires_grad}'})")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        first = {}
        for i, p in enumerate(params):
            if id(p) in seen or id(p) in first:
                where = f"entry {first[id(p)]} of this group" if id(p) in first else "an earlier group"
                raise ValueError(f"parameter at entry {i} (shape {p.shape}) appears more than once: it is "
                                 f"already in {where}; list each parameter once (model.parameters() does)")
            first[id(p)] = i
        new = {k: v for k, v in self.defaults.items()}
        new.update({k: v for k, v in group.items() if k != "params"})
        self._check_hyperparameters(new)
        new["params"] = params
        self.param_groups.append(new)

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to None (PyTorch's ``set_to_none=True``)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_hyperparameters(self, group: dict) -> None:
        """Raise (naming the option and the value) unless `group`'s hyper-parameters are
        valid; subclasses check theirs, before any state exists."""

    def _check_grads(self) -> None:
        """Raise, before any state changes, when a parameter's ``.grad`` has another shape
        than the parameter: the error names its index (as in `state_dict`) and both shapes."""
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is not None and (type(g) is not np.ndarray or g.shape != p.data.shape):
                    self._check_grad_shapes()  # the slow path, which finds and names it

    def _check_grad_shapes(self) -> None:
        for i, p in enumerate(self._ordered_params()):
            if p.grad is not None and np.shape(p.grad) != p.shape:
                group = next(k for k, g in enumerate(self.param_groups) if any(q is p for q in g["params"]))
                raise ValueError(f"{type(self).__name__}.step(): parameter {i} (group {group}) has shape "
                                 f"{p.shape} but its .grad has shape {np.shape(p.grad)}; nothing was "
                                 "updated: the gradient must have the parameter's shape")

    def _params_with_grad(self, group) -> list:
        """``(parameter, gradient)`` for each parameter of `group` that has one; a parameter
        without a gradient is left as it is."""
        return [(p, p.grad) for p in group["params"] if p.grad is not None]

    # ---- state ----------------------------------------------------------------------
    def _ordered_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        """``{"state": {index: {name: array or number}}, "param_groups": [{..., "params":
        [index, ...]}]}``; arrays are copies."""
        index = {id(p): i for i, p in enumerate(self._ordered_params())}
        state = {index[id(p)]: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        groups = []
        for g in self.param_groups:
            hyper = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            hyper["params"] = [index[id(p)] for p in g["params"]]
            groups.append(hyper)
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and state saved by `state_dict` from an optimizer over
        parameters of the same shapes in the same order. Arrays are copied and cast to each
        parameter's dtype."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter group(s), "
                             f"this optimizer has {len(self.param_groups)}")
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"parameter group {i} has {len(saved['params'])} parameters in the "
                                 f"loaded state dict but {len(own['params'])} in this optimizer")
        for saved, own in zip(groups, self.param_groups):
            self._check_hyperparameters({**own, **saved})
        by_index = {}
        for saved, own in zip(groups, self.param_groups):
            by_index.update(zip(saved["params"], own["params"]))
        new_state = {}
        for key, s in state_dict["state"].items():
            p = by_index.get(int(key))
            if p is None:
                raise KeyError(f"state for parameter index {key} matches no parameter of this optimizer")
            entry = {}
            for k, v in s.items():
                if isinstance(v, np.ndarray):
                    if v.shape != p.shape:
                        raise ValueError(f"state {k!r} of parameter {key} has shape {v.shape}, "
                                         f"the parameter has shape {p.shape}")
                    v = v.astype(p.dtype, copy=True)
                entry[k] = v
            new_state[p] = entry
        self.state = new_state
        for saved, own in zip(groups, self.param_groups):
            own.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})

    def state_nbytes(self) -> int:
        """Bytes of NumPy arrays held as optimizer state (e.g. momentum buffers, Adam's two
        moments): the optimizer's share of a rank's memory."""
        return int(sum(v.nbytes for s in self.state.values() for v in s.values()
                       if isinstance(v, np.ndarray)))

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])
