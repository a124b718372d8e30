"""Adam and AdamW, as torch.optim. The update itself is the ``adam_update`` kernel
(reference: ``tinylm/reference/adam.py``), one pass over each parameter."""

from __future__ import annotations

import numpy as np

from tinylm import backends
from tinylm.optim.optimizer import Optimizer
from tinylm.reference.adam import adam_update as reference_adam_update


class Adam(Optimizer):
    """Adam (Kingma & Ba) with weight decay as an L2 term added to the gradient.

    ``amsgrad=True`` (Reddi et al.) divides by the largest second moment seen so far
    instead of the current one, kept per parameter as ``max_exp_avg_sq``, so the step
    size of an element never grows back when its gradients get smaller. The AMSGrad
    update runs on the reference kernel (NumPy or CuPy arrays alike) on every backend:
    the Cython and CUDA kernels do plain Adam/AdamW only.

    The per-parameter state is ``step`` (an int, counting from 1), ``exp_avg`` and
    ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad), torch's names, so a torch
    ``Adam.state_dict()`` loads (see ``Optimizer.load_state_dict``).
    """

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{type(self).__name__}: invalid lr={lr}, betas={betas}, eps={eps} "
                             f"or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=bool(amsgrad)))

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns ``closure()``'s
        loss when a closure is given (it is called first), else None."""
        loss = self._evaluate(closure)
        update = backends.kernel("adam_update")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(id(p))
                if state is None:
                    xp = backends.get_array_module(p.data)
                    state = self.state[id(p)] = {"step": 0, "exp_avg": xp.zeros_like(p.data),
                                                 "exp_avg_sq": xp.zeros_like(p.data)}
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = xp.zeros_like(p.data)
                state["step"] += 1
                arguments = (p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"], state["step"], group["lr"],
                             beta1, beta2, group["eps"], group["weight_decay"], self.decoupled)
                if group["amsgrad"]:
                    reference_adam_update(*arguments, max_exp_avg_sq=state["max_exp_avg_sq"])
                else:
                    update(*arguments)
        return loss

    def _check_loaded_group(self, index: int, settings: dict) -> dict:
        """torch 2.x saves ``decoupled_weight_decay`` in Adam's and AdamW's groups: it
        must say what this class does (False for Adam, True for AdamW)."""
        decoupled = settings.pop("decoupled_weight_decay", self.decoupled)
        if bool(decoupled) != self.decoupled:
            other = "AdamW" if decoupled else "Adam"
            raise ValueError(f"{type(self).__name__}.load_state_dict: group {index} was saved by {other} "
                             f"(decoupled_weight_decay={decoupled}); load it into {other}")
        if "betas" in settings:
            settings["betas"] = tuple(float(b) for b in settings["betas"])
        return settings

    def _check_loaded_state(self, index: int, param, group: dict, state: dict) -> None:
        """A parameter's saved state must be Adam's: ``step`` a whole number >= 1 (torch
        saves it as a float tensor; it becomes an int) and the moments (and, with
        amsgrad, ``max_exp_avg_sq``) arrays of the parameter's shape, nothing else."""
        who = f"{type(self).__name__}.load_state_dict: parameter {index}"
        expected = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group["amsgrad"] else set())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"{who}: the state has {sorted(state)}; Adam (amsgrad={group['amsgrad']}) needs "
                             f"{sorted(expected)}" + (f" (missing {missing})" if missing else "")
                             + (f" (unknown {extra})" if extra else ""))
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)) \
                or step != int(step) or step < 1:
            raise ValueError(f"{who}: step must be a whole number >= 1, got {step!r}")
        state["step"] = int(step)
        for key in expected - {"step"}:
            if not isinstance(state[key], np.ndarray):
                raise ValueError(f"{who}: {key} must be an array, got {type(state[key]).__name__}")
        super()._check_loaded_state(index, param, group, state)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): the parameter shrinks by
    lr · λ each step instead of λ p entering the moments."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
