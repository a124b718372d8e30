"""softmax and log_softmax along one axis, computed stably.

Both subtract the row maximum first: softmax(x) = softmax(x - c) for any constant c,
and with c = max x every exponent is ≤ 0, so nothing overflows even for logits of 1e4.
"""

from __future__ import annotations

from tinylm.autograd import Function
from tinylm.backends import get_array_module
from tinylm.ops.axes import dim_args, normalize_axis


class Softmax(Function):
    """yᵢ = e^xᵢ / Σⱼ e^xⱼ.

    The Jacobian is dyᵢ/dxⱼ = yᵢ (δᵢⱼ - yⱼ), so

        dL/dxⱼ = Σᵢ gyᵢ yᵢ (δᵢⱼ - yⱼ) = yⱼ (gyⱼ - Σᵢ gyᵢ yᵢ)

    which needs one sum per row instead of the full Jacobian.
    """

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        if x.size == 0:  # nothing to normalise (and no maximum to subtract)
            self.save_for_backward(x)
            return x.copy()
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        y = e / e.sum(axis=self.axis, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """yᵢ = xᵢ - log Σⱼ e^xⱼ.

    dyᵢ/dxⱼ = δᵢⱼ - softmax(x)ⱼ, so

        dL/dxⱼ = Σᵢ gyᵢ (δᵢⱼ - pⱼ) = gyⱼ - pⱼ Σᵢ gyᵢ,   p = softmax(x) = e^y
    """

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        if x.size == 0:
            self.save_for_backward(x)
            return x.copy()
        shifted = x - x.max(axis=self.axis, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        p = get_array_module(y).exp(y)
        return gy - p * gy.sum(axis=self.axis, keepdims=True)


def softmax(x, dim: int = -1, *, axis=None):
    """Along ``dim`` (``axis=`` is an alias), -1 by default."""
    dim, _ = dim_args("softmax", None if dim == -1 and axis is not None else dim, False, axis)
    return Softmax(normalize_axis("softmax", dim, x.ndim))(x)


def log_softmax(x, dim: int = -1, *, axis=None):
    dim, _ = dim_args("log_softmax", None if dim == -1 and axis is not None else dim, False, axis)
    return LogSoftmax(normalize_axis("log_softmax", dim, x.ndim))(x)
