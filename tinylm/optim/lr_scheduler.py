"""Learning-rate schedules, as torch.optim.lr_scheduler: each sets every group's ``lr``
from its base lr (the lr it had when the schedule was made) and the step count.

The step count is torch's: 0 at construction (which already sets the lr for step 0),
one more per call to ``step()``, made after ``optimizer.step()``. Each schedule here
uses torch's closed form, lr(base_lr, step); torch itself mostly updates the lr
recursively from the previous one, which gives the same numbers up to rounding (the
tests compare step by step). The closed form keeps ``state_dict`` to the step count
and the base lrs, from which ``load_state_dict`` sets the lr again.
"""

from __future__ import annotations

import math
from typing import Callable


class LRScheduler:
    """The step counting, ``get_last_lr`` and ``state_dict``; subclasses define
    ``lr(base_lr, step)``."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def lr(self, base_lr: float, step: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} must define lr(base_lr, step)")

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr(base, self.last_step)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.last_step, self.base_lrs = state["last_step"], list(state["base_lrs"])
        self._apply()


class LambdaLR(LRScheduler):
    """torch.optim.lr_scheduler.LambdaLR: lr = base_lr · lr_lambda(step)."""

    def __init__(self, optimizer, lr_lambda: Callable[[int], float]):
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def lr(self, base_lr: float, step: int) -> float:
        return base_lr * self.lr_lambda(step)


class StepLR(LRScheduler):
    """torch.optim.lr_scheduler.StepLR: the lr is multiplied by ``gamma`` every
    ``step_size`` steps, lr = base_lr · gamma^⌊step / step_size⌋."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        if not (isinstance(step_size, int) and step_size >= 1):
            raise ValueError(f"StepLR: step_size must be an int >= 1, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr(self, base_lr: float, step: int) -> float:
        return base_lr * self.gamma ** (step // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """torch.optim.lr_scheduler.CosineAnnealingLR: half a cosine from base_lr down to
    ``eta_min`` over ``T_max`` steps,

        lr = eta_min + (base_lr - eta_min) · (1 + cos(π · step / T_max)) / 2,

    and, as in torch (there is no restart), on past T_max back up the cosine: the lr
    is base_lr again at 2 T_max. Stop stepping at T_max to stay at eta_min."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):  # noqa: N803 (torch's name)
        if not T_max > 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be > 0, got {T_max!r}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def lr(self, base_lr: float, step: int) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * step / self.T_max)) / 2


def warmup_cosine(warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> Callable[[int], float]:
    """Factor rising linearly from 1/warmup to 1 over ``warmup_steps``, then following
    half a cosine down to ``min_factor`` at ``total_steps`` (and staying there)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class WarmupCosineLR(LambdaLR):
    """Linear warm-up, then cosine decay: ``LambdaLR`` with ``warmup_cosine``."""

    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_factor: float = 0.0):
        if warmup_steps < 0 or total_steps < warmup_steps:
            raise ValueError(f"WarmupCosineLR: need 0 <= warmup_steps <= total_steps, "
                             f"got {warmup_steps}, {total_steps}")
        super().__init__(optimizer, warmup_cosine(warmup_steps, total_steps, min_factor))
