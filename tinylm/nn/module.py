"""``Module`` and ``Parameter``: the containers that layers and models are built from.

As in PyTorch, assigning a ``Parameter`` or a ``Module`` to an attribute registers it,
in insertion order, so ``named_parameters()`` yields dotted names (``encoder.weight``)
in the order the layer created them: the names and order PyTorch uses, which is what
lets weights move between the two through ``state_dict``.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from tinylm import backends
from tinylm.autograd import Tensor


class Parameter(Tensor):
    """A tensor that is a learnable weight of a module: a leaf that requires grad."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer and model. Subclasses set parameters and sub-modules
    as attributes in ``__init__`` and write ``forward``."""

    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- walking the tree
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        yield from self._modules.items()

    def children(self) -> Iterator["Module"]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name in registration order; a parameter
        shared by two modules (tied weights) once, unless ``remove_duplicate=False``."""
        seen = set()
        for prefix, module in self.named_modules():
            for name, param in module._parameters.items():
                if param is None or (remove_duplicate and id(param) in seen):
                    continue
                seen.add(id(param))
                yield (f"{prefix}.{name}" if prefix else name), param

    def parameters(self) -> Iterator[Parameter]:
        for _, param in self.named_parameters():
            yield param

    # ---- modes and gradients
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.zero_grad()

    # ---- weights in and out
    def state_dict(self) -> dict[str, np.ndarray]:
        """``{dotted name: NumPy array}`` (copies, on the CPU), PyTorch's names; a tied
        parameter appears under each of its names, as in PyTorch."""
        return {name: np.array(param.numpy(), copy=True)
                for name, param in self.named_parameters(remove_duplicate=False)}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters of the same names (cast to each parameter's
        dtype and device). Missing, unexpected or mis-shaped keys are all listed in one
        error; with ``strict=False`` missing and unexpected keys are allowed, shapes never."""
        params = dict(self.named_parameters(remove_duplicate=False))
        missing = [name for name in params if name not in state]
        unexpected = [name for name in state if name not in params]
        mismatched = [
            f"{name}: expected {params[name].shape}, got {tuple(np.shape(value))}"
            for name, value in state.items()
            if name in params and tuple(np.shape(value)) != params[name].shape
        ]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"wrong shapes: {'; '.join(mismatched)}")
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + " | ".join(problems))
        for name, value in state.items():
            if name in params:
                param = params[name]
                array = np.asarray(value.numpy() if isinstance(value, Tensor) else value, dtype=param.dtype)
                param.data = backends.to_device(array.copy(), param.device)

    def to(self, target) -> "Module":
        """Move every parameter to a device (``"cpu"``, ``"cuda"``) or cast it to a float
        dtype (``np.float64``), in place; gradients are dropped."""
        for param in self.parameters():
            if isinstance(target, str):
                param.data = backends.to_device(param.data, target)
            else:
                param.data = param.data.astype(target)
            param.grad = None
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    # ---- printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(module).replace("\n", "\n  ") for name, module in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
