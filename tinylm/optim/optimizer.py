"""``Optimizer``: parameter groups, state, ``zero_grad`` and ``state_dict``, as torch.optim."""

from __future__ import annotations

import copy

import numpy as np

from tinylm import backends


class Optimizer:
    """Holds ``param_groups`` (lists of parameters with their hyperparameters) and
    per-parameter ``state``. Subclasses write ``step()``.

    ``params`` is an iterable of parameters, or of dicts ``{"params": [...], "lr": ...}``
    to give groups their own settings (for example no weight decay on biases).
    """

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            group = {**defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if not p.requires_grad:
                    raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} does not require grad")
            self.param_groups.append(group)
        self.state: dict[int, dict] = {}  # keyed by id(param)

    def _params(self):
        for group in self.param_groups:
            yield from group["params"]

    def zero_grad(self) -> None:
        for p in self._params():
            p.zero_grad()

    def step(self) -> None:
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

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: parameter groups of sizes "
                f"{[len(g['params']) for g in groups]} do not match this optimizer's "
                f"{[len(g['params']) for g in self.param_groups]}"
            )
        params = list(self._params())
        self.state = {}
        for index, values in state_dict["state"].items():
            p = params[int(index)]
            self.state[id(p)] = {
                name: (backends.to_device(np.array(v, dtype=p.dtype), p.device) if hasattr(v, "shape") else v)
                for name, v in values.items()
            }
        for mine, saved in zip(self.param_groups, groups):
            mine.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
