"""LayerNorm as one op: normalise each row, then scale and shift (derivation in
``tinylm/reference/layer_norm.py``, whose kernels do the work)."""

from __future__ import annotations

import math

from tinylm import backends
from tinylm.autograd import Function


class LayerNorm(Function):
    """y = (x - μ) / √(σ² + ε) ⊙ w + b over the last axis of x (N, D).

    Inputs are (x,) or (x, weight) or (x, weight, bias). The backward is the three-term
    formula dL/dx = r (ĝ - mean ĝ - x̂ mean(ĝ x̂)) with ĝ = dL/dy ⊙ w and r = 1/√(σ² + ε),
    dL/dw = Σ dL/dy ⊙ x̂ and dL/db = Σ dL/dy over rows; mean and r are kept from the forward.
    """

    def __init__(self, eps: float):
        self.eps = eps

    def forward(self, x, weight=None, bias=None):
        y, mean, rstd = backends.kernel("layer_norm_forward")(x, weight, bias, self.eps)
        self.save_for_backward(x, weight, mean, rstd)
        self.has_bias = bias is not None
        return y

    def backward(self, gy):
        x, weight, mean, rstd = self.saved
        grad_x, grad_weight, grad_bias = backends.kernel("layer_norm_backward")(gy, x, weight, mean, rstd)
        grads = (grad_x,) if weight is None else (grad_x, grad_weight)
        return grads + ((grad_bias,) if self.has_bias else ())


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalise over the trailing ``normalized_shape`` axes (PyTorch's ``F.layer_norm``)."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(normalized_shape):] != normalized_shape:
        raise ValueError(f"layer_norm: input {x.shape} does not end in normalized_shape {normalized_shape}")
    for name, array in (("weight", weight), ("bias", bias)):
        if array is not None and array.shape != normalized_shape:
            raise ValueError(f"layer_norm: {name} {array.shape} must have normalized_shape {normalized_shape}")
    if bias is not None and weight is None:
        raise ValueError("layer_norm: a bias needs a weight (pass ones for no scaling)")
    width = math.prod(normalized_shape)
    rows = x.reshape(-1, width)  # (N, D): every leading axis is a row
    affine = () if weight is None else (weight.reshape(width),) + (() if bias is None else (bias.reshape(width),))
    return LayerNorm(eps)(rows, *affine).reshape(*x.shape)
