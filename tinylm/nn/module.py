"""``Module`` and ``Parameter``: the containers that layers and models are built from.

As in PyTorch, assigning a ``Parameter`` or a ``Module`` to an attribute registers it,
in insertion order, so ``named_parameters()`` yields dotted names (``encoder.weight``)
in the order the layer created them: the names and order PyTorch uses, which is what
lets weights move between the two through ``state_dict``. Handing a model's weights to
its PyTorch twin is one line:

    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})

and back: ``model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})``.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import numpy as np

from tinylm import backends
from tinylm.autograd import Tensor


class Parameter(Tensor):
    """A tensor that is a learnable weight of a module: a leaf that requires grad."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, as PyTorch's: the keys the module has that the
    state lacked, and the keys of the state the module has no place for."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model. Subclasses set parameters and sub-modules
    as attributes in ``__init__`` and write ``forward``; ``register_buffer`` keeps a
    tensor that is state but not a weight (in ``state_dict``, moved by ``to``, never
    trained)."""

    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if name in self._buffers and (value is None or isinstance(value, Tensor)) and not isinstance(value, Parameter):
            self._buffers[name] = value  # assigning to a buffer's name replaces the buffer, as PyTorch
            object.__setattr__(self, name, value)
            return
        self._forget(name)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._forget(name)
        object.__delattr__(self, name)

    def _forget(self, name):
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent_buffers.discard(name)
        self._modules.pop(name, None)

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Keep ``tensor`` (a Tensor, a NumPy array or None) as ``self.<name>``: state that
        is not a parameter, such as running statistics. Persistent buffers are saved in
        ``state_dict``; all are moved by ``to``; none requires grad."""
        if "_buffers" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before register_buffer")
        if isinstance(tensor, Parameter):
            raise TypeError(f"{type(self).__name__}.register_buffer: {name!r} is a Parameter; assign it instead")
        if tensor is not None and not isinstance(tensor, Tensor):
            tensor = Tensor(np.asarray(tensor))
        self._forget(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, tensor)

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

    def named_buffers(self, remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        """Every buffer with its dotted name, as ``named_parameters``."""
        seen = set()
        for prefix, module in self.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is None or (remove_duplicate and id(buffer) in seen):
                    continue
                seen.add(id(buffer))
                yield (f"{prefix}.{name}" if prefix else name), buffer

    def buffers(self) -> Iterator[Tensor]:
        for _, buffer in self.named_buffers():
            yield buffer

    def apply(self, fn: Callable[["Module"], object]) -> "Module":
        """Call ``fn`` on every sub-module, children before parents, then on this one
        (PyTorch's order); the usual way to re-initialise a model's weights."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

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

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze (True) every parameter, in place."""
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    # ---- weights in and out
    def _state_tensors(self) -> dict[str, Tensor]:
        """What ``state_dict`` saves: per module, its parameters then its persistent
        buffers (PyTorch's order); a tied tensor under each of its names."""
        state = {}
        for prefix, module in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    state[dot + name] = param
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent_buffers:
                    state[dot + name] = buffer
        return state

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{dotted name: NumPy array}`` (copies, on the CPU) of the parameters and
        persistent buffers, PyTorch's names; a tied parameter appears under each of its
        names, as in PyTorch."""
        return {name: np.array(tensor.numpy(), copy=True) for name, tensor in self._state_tensors().items()}

    def load_state_dict(self, state: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays into the parameters and buffers of the same names (cast to each
        one's dtype and device). Missing, unexpected or mis-shaped keys are all listed in
        one error; with ``strict=False`` missing and unexpected keys are allowed, shapes
        never. Returns ``(missing_keys, unexpected_keys)`` as PyTorch."""
        targets = self._state_tensors()
        missing = [name for name in targets if name not in state]
        unexpected = [name for name in state if name not in targets]
        mismatched = [
            f"{name}: expected {targets[name].shape}, got {tuple(np.shape(value))}"
            for name, value in state.items()
            if name in targets and tuple(np.shape(value)) != targets[name].shape
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
            if name in targets:
                target = targets[name]
                array = np.asarray(value.numpy() if isinstance(value, Tensor) else value, dtype=target.dtype)
                target.data = backends.to_device(array.copy(), target.device)
        return IncompatibleKeys(missing, unexpected)

    def to(self, target) -> "Module":
        """Move every parameter and buffer to a device (``"cpu"``, ``"cuda"``) or cast the
        parameters and float buffers to a float dtype (``np.float64``), in place;
        gradients are dropped."""
        for param in self.parameters():
            if isinstance(target, str):
                param.data = backends.to_device(param.data, target)
            else:
                param.data = param.data.astype(target)
            param.grad = None
        for buffer in self.buffers():
            if isinstance(target, str):
                buffer.data = backends.to_device(buffer.data, target)
            elif buffer.dtype.kind == "f":
                buffer.data = buffer.data.astype(target)
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
