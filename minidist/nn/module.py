"""`Module` and `Parameter`: what every layer is built from (`Sequential` is in container.py).

Naming follows PyTorch exactly (``"0.weight"``, ``"features.1.running_mean"``), so a
``state_dict()`` maps one to one onto a PyTorch model of the same architecture.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, NamedTuple

import numpy as np

from ..autograd import Tensor


class Parameter(Tensor):
    """``Parameter(data, requires_grad=True)``: a Tensor that a `Module` registers as one
    of its learnable weights when it is assigned as an attribute.

    Like ``torch.nn.Parameter`` it wraps the given array without copying it.
    """

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter containing:\n{self.data!r}"


class _IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of every layer and model.

    Assigning a `Parameter`, a `Module`, or (for a name made with `register_buffer`) a
    Tensor / None to an attribute registers it. Subclasses define ``forward``; calling the
    module calls ``forward``. ``training`` is True until `eval()`.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- registration -------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called; "
                                 "call super().__init__() first in your subclass's __init__")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        home = params if isinstance(value, Parameter) else modules if isinstance(value, Module) else None
        if home is not None:  # a new Parameter or child: it leaves every other place
            for place in (self.__dict__, params, buffers, modules):
                if place is not home:
                    place.pop(name, None)
            home[name] = value
            return
        for place, what, allowed in ((params, "parameter", "wrap it in nn.Parameter (or assign None)"),
                                     (buffers, "buffer", "expected a Tensor or None"),
                                     (modules, "child module", "expected a Module or None")):
            if name in place:
                if value is not None and not (place is buffers and isinstance(value, Tensor)):
                    raise TypeError(f"cannot assign {type(value).__name__} to {what} {name!r}: {allowed}")
                place[name] = value
                return
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # only called when normal lookup fails: parameters, buffers and children live in dicts
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register `param` (or None: a declared but absent parameter, as ``bias=False``)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register {type(param).__name__} as parameter {name!r}: "
                            "expected a Parameter or None")
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Register a non-learnable state Tensor (e.g. ``running_mean``), saved in the
        state_dict unless ``persistent=False``. NumPy arrays are wrapped in a Tensor."""
        if "." in name or name == "":
            raise KeyError(f"buffer name must be a non-empty string without '.' (got {name!r})")
        if tensor is not None and not isinstance(tensor, Tensor):
            tensor = Tensor._from_array(np.asarray(tensor))
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        self.__dict__.pop(name, None)
        self._modules[name] = module

    # ---- traversal ----------------------------------------------------------------
    def named_modules(self, prefix: str = "", memo: set | None = None) -> Iterator[tuple[str, "Module"]]:
        """Pre-order walk: this module (named `prefix`), then each child's subtree."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self) -> Iterator["Module"]:
        for _, child in self.named_children():
            yield child

    def _named_members(self, registry: str, recurse: bool):
        seen = set()
        walk = self.named_modules() if recurse else [("", self)]
        for prefix, module in walk:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue  # shared weights are listed once, under their first name
                seen.add(id(value))
                yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self, recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        return self._named_members("_parameters", recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse):
            yield p

    def named_buffers(self, recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse):
            yield b

    # ---- modes and gradients ------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to None (PyTorch's default ``set_to_none``)."""
        for p in self.parameters():
            p.grad = None

    def to(self, dtype) -> "Module":
        """Cast parameters (and their gradients) and floating buffers to `dtype` in place:
        the Parameter objects stay the same, so an optimizer built earlier keeps them."""
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"Module.to() only casts to floating dtypes (got {dtype})")
        for p in self.parameters():
            p.data = p.data.astype(dtype, copy=False)
            if p.grad is not None:
                p.grad = p.grad.astype(dtype, copy=False)
        for b in self.buffers():
            if np.issubdtype(b.data.dtype, np.floating):
                b.data = b.data.astype(dtype, copy=False)
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    # ---- state --------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and persistent buffer, keyed as in PyTorch: for each
        module in pre-order, its parameters, then its buffers."""
        out = OrderedDict()
        for prefix, module in self.named_modules():
            head = f"{prefix}." if prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    out[head + name] = p.data.copy()
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent_buffers:
                    out[head + name] = b.data.copy()
        return out

    def _state_tensors(self) -> "OrderedDict[str, Tensor]":
        out = OrderedDict()
        for prefix, module in self.named_modules():
            head = f"{prefix}." if prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    out[head + name] = p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent_buffers:
                    out[head + name] = b
        return out

    def load_state_dict(self, state_dict, strict: bool = True) -> _IncompatibleKeys:
        """Copy `state_dict`'s arrays into this module's parameters and buffers in place
        (values are cast to each target's dtype).

        Shape mismatches are always an error. With ``strict=True`` missing and unexpected
        keys are errors too; otherwise they are returned as ``(missing_keys,
        unexpected_keys)``. The error lists every problem at once.
        """
        own = self._state_tensors()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = [(k, tuple(np.shape(state_dict[k])), own[k].data.shape)
                      for k in own if k in state_dict and tuple(np.shape(state_dict[k])) != own[k].data.shape]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
        for k, got, want in mismatched:
            problems.append(f"size mismatch for {k!r}: the state_dict has shape {got}, "
                            f"this model has shape {want}")
        if problems:
            raise RuntimeError(f"error(s) in loading state_dict for {type(self).__name__}:\n  "
                               + "\n  ".join(problems)
                               + "\nbuild the model with the architecture the state_dict came from"
                               + (", or pass strict=False to skip missing/unexpected keys" if not mismatched else ""))
        for k, t in own.items():
            if k in state_dict:
                value = state_dict[k]
                t.data[...] = value.data if isinstance(value, Tensor) else np.asarray(value)
        return _IncompatibleKeys(missing, unexpected)

    # ---- calling and printing -----------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward(); define it in the subclass")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = []
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
