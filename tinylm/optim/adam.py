"""Adam and AdamW, as torch.optim. The update itself is the ``adam_update`` kernel
(reference: ``tinylm/reference/adam.py``), one pass over each parameter."""

from __future__ import annotations

from tinylm import backends
from tinylm.optim.optimizer import Optimizer


class Adam(Optimizer):
    """Adam (Kingma & Ba) with weight decay as an L2 term added to the gradient."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{type(self).__name__}: invalid lr={lr}, betas={betas}, eps={eps} "
                             f"or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self) -> None:
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
                state["step"] += 1
                update(p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"], state["step"], group["lr"],
                       beta1, beta2, group["eps"], group["weight_decay"], self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): the parameter shrinks by
    lr · λ each step instead of λ p entering the moments."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
