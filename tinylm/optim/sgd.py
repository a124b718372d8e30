"""Stochastic gradient descent with momentum, as torch.optim.SGD."""

from __future__ import annotations

from tinylm.optim.optimizer import Optimizer


class SGD(Optimizer):
    """For each parameter p with gradient g (torch.optim's rule):

        g ← g + λ p                                   (weight decay)
        b ← g at the first step, then μ b + (1 - τ) g (momentum buffer, dampening τ)
        g ← g + μ b  (nesterov)   or   g ← b
        p ← p - lr · g
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns ``closure()``'s
        loss when a closure is given (it is called first), else None."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if weight_decay != 0:
                    g = g + weight_decay * p.data
                if momentum != 0:
                    state = self.state.setdefault(id(p), {})
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.copy()
                    else:
                        buffer = state["momentum_buffer"]
                        buffer *= momentum
                        buffer += (1 - group["dampening"]) * g
                    buffer = state["momentum_buffer"]
                    g = g + momentum * buffer if group["nesterov"] else buffer
                p.data -= lr * g
        return loss
