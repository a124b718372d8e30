"""Learning-rate schedules: each sets every group's ``lr`` = base lr · factor(step)."""

from __future__ import annotations

import math
from typing import Callable


class LambdaLR:
    """torch.optim.lr_scheduler.LambdaLR: lr = base_lr · lr_lambda(step), where step
    counts the calls to ``step()`` (0 at construction)."""

    def __init__(self, optimizer, lr_lambda: Callable[[int], float]):
        self.optimizer, self.lr_lambda = optimizer, lr_lambda
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        factor = self.lr_lambda(self.last_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

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
