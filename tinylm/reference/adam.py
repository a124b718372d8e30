"""Optimizer update kernels, reference versions (in place on the arrays given)."""

from __future__ import annotations

import math

from tinylm.backends import get_array_module


def adam_update(param, grad, exp_avg, exp_avg_sq, step: int, lr: float, beta1: float, beta2: float,
                eps: float, weight_decay: float, decoupled: bool, *, max_exp_avg_sq=None) -> None:
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step, torch.optim's rule:

        AdamW only: p ← p · (1 - lr · λ)                    (decay outside the gradient)
        Adam only:  g ← g + λ p                              (decay as an L2 term in g)
        m ← m + (1 - β₁)(g - m)                              (mean of g, EMA)
        v ← β₂ v + (1 - β₂) g²                               (mean of g², EMA)
        AMSGrad only: v̂ ← max(v̂, v), and v̂ stands for v below
        p ← p - (lr / (1 - β₁ᵗ)) · m / (√v / √(1 - β₂ᵗ) + ε)

    Both moments start at zero, so early on they underestimate; dividing by 1 - βᵗ
    removes that bias. ε sits outside the square root, after the bias correction, as
    in PyTorch. ``step`` counts from 1.

    AMSGrad (``max_exp_avg_sq`` given, the array v̂, updated in place) divides by the
    largest v seen so far, so an element's step never grows when its gradients shrink.
    Only this reference does AMSGrad; it works on CuPy arrays as well as NumPy ones.
    """
    if decoupled:
        param *= 1 - lr * weight_decay
    elif weight_decay != 0:
        grad = grad + weight_decay * param
    exp_avg += (grad - exp_avg) * (1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    second_moment = exp_avg_sq
    if max_exp_avg_sq is not None:
        get_array_module(param).maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second_moment = max_exp_avg_sq
    step_size = lr / (1 - beta1**step)
    denominator = (second_moment ** 0.5) / math.sqrt(1 - beta2**step) + eps
    param -= step_size * (exp_avg / denominator)
