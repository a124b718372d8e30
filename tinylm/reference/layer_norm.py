"""LayerNorm kernels, reference versions, over the last axis of x (N, D).

Forward, per row: μ = mean(x), σ² = mean((x - μ)²) (biased, as PyTorch),
r = 1/√(σ² + ε), x̂ = (x - μ) r, y = x̂ ⊙ w + b.

Backward: with ĝ = dL/dy ⊙ w (the gradient reaching x̂), x̂ depends on x directly and
through μ and r. Differentiating x̂ᵢ = (xᵢ - μ) r and collecting terms gives the
well-known three-term form

    dL/dxᵢ = r · (ĝᵢ - mean(ĝ) - x̂ᵢ · mean(ĝ ⊙ x̂))

(the mean(ĝ) term is the path through μ, the x̂ · mean(ĝ x̂) term the path through r),
and dL/dw = Σₙ dL/dy ⊙ x̂, dL/db = Σₙ dL/dy over the rows.
"""

from __future__ import annotations

from tinylm.backends import get_array_module


def layer_norm_forward(x, weight, bias, eps: float):
    """x (N, D), weight and bias (D,) or None -> (y (N, D), mean (N,), rstd (N,))."""
    xp = get_array_module(x)
    mean = x.mean(axis=1)  # (N,)
    centered = x - mean[:, None]
    rstd = 1.0 / xp.sqrt((centered * centered).mean(axis=1) + x.dtype.type(eps))  # (N,)
    y = centered * rstd[:, None]
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y, mean, rstd.astype(x.dtype, copy=False)


def layer_norm_backward(grad_y, x, weight, mean, rstd):
    """-> (grad_x (N, D), grad_weight (D,) or None, grad_bias (D,) or None)."""
    x_hat = (x - mean[:, None]) * rstd[:, None]  # (N, D), recomputed rather than stored
    g_hat = grad_y * weight if weight is not None else grad_y
    grad_x = rstd[:, None] * (
        g_hat - g_hat.mean(axis=1, keepdims=True) - x_hat * (g_hat * x_hat).mean(axis=1, keepdims=True)
    )
    if weight is None:
        return grad_x, None, None
    return grad_x, (grad_y * x_hat).sum(axis=0), grad_y.sum(axis=0)
