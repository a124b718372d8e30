"""``Optimizer``: parameter groups, state, ``zero_grad`` and ``state_dict``, as torch.optim."""

from __future__ import annotations

import copy

import numpy as np

from tinylm import backends


def _is_torch_tensor(value) -> bool:
    """True for a torch.Tensor, told by its methods so that torch need not be imported."""
    return hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy")


def _plain(value):
    """A saved value as tinylm keeps it: a torch tensor becomes a NumPy array (a 0-d one
    a Python number), a 0-d NumPy array a Python number; anything else is kept."""
    if _is_torch_tensor(value):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


class Optimizer:
    """Holds ``param_groups`` (lists of parameters with their hyperparameters) and
    per-parameter ``state``. Subclasses write ``step()``.

    ``params`` is an iterable of parameters, or of dicts ``{"params": [...], "lr": ...}``
    to give groups their own settings (for example no weight decay on biases).

    Parameters with ``requires_grad=False`` (frozen) are accepted, as in torch: they
    get no gradient from ``backward``, and ``step`` leaves alone every parameter whose
    ``grad`` is None, so they are never updated.
    """

    def __init__(self, params, defaults: dict):
        from tinylm.autograd import Tensor
        from tinylm.nn.module import Module

        name = type(self).__name__
        if isinstance(params, Module):
            raise TypeError(f"{name}: got the module {type(params).__name__} itself; pass its parameters: "
                            f"{name}(model.parameters(), ...)")
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of parameters or of dicts, got one "
                            f"{type(params).__name__}; pass a list: {name}([param], ...)")
        if callable(params) and not hasattr(params, "__iter__"):
            raise TypeError(f"{name}: params is a function ({getattr(params, '__name__', params)!r}); "
                            f"call it: {name}(model.parameters(), ...)")
        try:
            groups = list(params)
        except TypeError:
            raise TypeError(f"{name}: params must be an iterable of parameters or of dicts, got "
                            f"{type(params).__name__}") from None
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list (model.parameters() is a generator: "
                             f"it is empty the second time it is used)")
        self.defaults = defaults
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}  # keyed by id(param)
        for group in groups if isinstance(groups[0], dict) else [{"params": groups}]:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group ``{"params": [...], "lr": ..., ...}`` (torch's rule): settings it
        leaves out take the optimizer's defaults, and a parameter may be in one group
        only, since its state and its update would otherwise be done twice."""
        from tinylm.autograd import Tensor

        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}.add_param_group: a group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, set):
            raise TypeError(f"{name}: a group's params must be an ordered collection (a list), not a set: "
                            f"the order numbers the parameters in state_dict")
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: can only optimize tensors, but one of the params is {type(p).__name__}")
        group = {**self.defaults, **param_group, "params": params}
        ids = {id(p) for p in params}
        if len(ids) != len(params):
            raise ValueError(f"{name}: a parameter group holds the same parameter twice")
        if any(id(p) in ids for p in self._params()):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def _params(self):
        for group in self.param_groups:
            yield from group["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients before the next backward (which adds to them).

        ``set_to_none=True`` (torch 2.x's default) drops them: ``grad`` becomes None,
        which frees the memory and tells ``step`` to skip a parameter that then gets no
        gradient. ``set_to_none=False`` fills the existing gradients with zeros.
        """
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0

    def _evaluate(self, closure):
        """``step(closure)``: call ``closure`` (which recomputes the loss and its
        gradients) with grad recording on, and return its loss, as torch does."""
        if closure is None:
            return None
        from tinylm.autograd import enable_grad

        with enable_grad():
            return closure()

    def step(self, closure=None):
        raise NotImplementedError(f"{type(self).__name__} must define step")

    def state_dict(self) -> dict:
        """``{"state": {index: {name: value}}, "param_groups": [...]}`` with parameters
        numbered in order, as torch.optim; arrays are NumPy copies."""
        index_of = {id(p): i for i, p in enumerate(self._params())}
        state = {}
        for key, values in self.state.items():
            state[index_of[key]] = {
                name: (np.array(backends.to_device(v, "cpu"), copy=True) if hasattr(v, "shape") else v)
                for name, v in values.items()
            }
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index_of[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    # Group settings torch saves that tinylm has no option for: loading is fine while
    # they hold torch's default (off), and refused otherwise, since tinylm would ignore them.
    _TORCH_ONLY_SETTINGS = ("maximize", "foreach", "capturable", "differentiable", "fused")

    def load_state_dict(self, state_dict: dict) -> None:
        """Load what ``state_dict`` gave, from tinylm or from torch.optim.

        A torch state dict loads too: its tensors become NumPy arrays (``.numpy()``),
        ``step`` (a tensor in torch) an int. Everything is checked here, so a state that
        does not fit this optimizer (missing moments, wrong shapes, a torch setting
        tinylm does not have) fails now, with what is wrong, not later inside ``step``.
        """
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(
                f"{name}.load_state_dict: parameter groups of sizes "
                f"{[len(g['params']) for g in groups]} do not match this optimizer's "
                f"{[len(g['params']) for g in self.param_groups]}"
            )
        new_groups = []
        for i, saved in enumerate(groups):
            settings = {}
            for key, value in saved.items():
                if key == "params":
                    continue
                value = _plain(value)
                if key in self._TORCH_ONLY_SETTINGS:
                    if value:
                        raise ValueError(f"{name}.load_state_dict: group {i} has {key}={value!r}, "
                                         f"a torch option tinylm's {name} does not have")
                    continue
                settings[key] = copy.deepcopy(value)
            settings = self._check_loaded_group(i, settings)
            new_groups.append(settings)
        params = list(self._params())
        group_of = {id(p): settings for g, settings in zip(self.param_groups, new_groups) for p in g["params"]}
        new_state = {}
        for index, values in state_dict["state"].items():
            p = params[int(index)]
            state = {key: _plain(v) for key, v in values.items() if v is not None}
            self._check_loaded_state(int(index), p, {**self.defaults, **group_of[id(p)]}, state)
            new_state[id(p)] = {
                key: (backends.to_device(np.array(v, dtype=p.dtype), p.device) if isinstance(v, np.ndarray) else v)
                for key, v in state.items()
            }
        self.state = new_state
        for mine, settings in zip(self.param_groups, new_groups):
            mine.update(settings)

    def _check_loaded_group(self, index: int, settings: dict) -> dict:
        """A saved group's settings, checked (and adjusted) for this optimizer; subclasses add rules."""
        return settings

    def _check_loaded_state(self, index: int, param, group: dict, state: dict) -> None:
        """Refuse a saved per-parameter state that does not fit ``param``: every array
        must have the parameter's shape. Subclasses also check the names."""
        for key, value in state.items():
            if isinstance(value, np.ndarray) and value.shape != tuple(param.shape):
                raise ValueError(f"{type(self).__name__}.load_state_dict: parameter {index}'s {key} has shape "
                                 f"{value.shape}, the parameter {tuple(param.shape)}")
