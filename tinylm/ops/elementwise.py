"""Elementwise functions y = f(x): each backward is gy · f'(x).

Where f'(x) can be written with y (exp, tanh, sigmoid, sqrt) the forward result is
saved instead of recomputing it.
"""

from __future__ import annotations

import numpy as np

from tinylm.autograd import Function
from tinylm.backends import get_array_module


class Exp(Function):
    """y = eˣ, so dy/dx = eˣ = y."""

    def forward(self, x):
        y = get_array_module(x).exp(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return gy * y


class Log(Function):
    """y = ln x, so dy/dx = 1/x."""

    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).log(x)

    def backward(self, gy):
        (x,) = self.saved
        return gy / x


class Sqrt(Function):
    """y = √x, so dy/dx = 1 / (2√x) = 1 / (2y)."""

    def forward(self, x):
        y = get_array_module(x).sqrt(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return gy / (2 * y)


class Tanh(Function):
    """y = tanh x, so dy/dx = 1 - tanh²x = 1 - y²."""

    def forward(self, x):
        y = get_array_module(x).tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return gy * (1 - y * y)


class Sigmoid(Function):
    """y = σ(x) = 1 / (1 + e⁻ˣ), so dy/dx = e⁻ˣ / (1 + e⁻ˣ)² = y (1 - y).

    Computed as (1 + tanh(x/2)) / 2, the same function, which never overflows
    (e⁻ˣ does for x < -88 in float32).
    """

    def forward(self, x):
        y = 0.5 * (1 + get_array_module(x).tanh(0.5 * x))
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return gy * y * (1 - y)


class ReLU(Function):
    """y = max(x, 0), so dy/dx = 1 where x > 0 and 0 elsewhere (0 at the kink, as PyTorch)."""

    def forward(self, x):
        self.save_for_backward(x > 0)
        return get_array_module(x).maximum(x, 0)

    def backward(self, gy):
        (positive,) = self.saved
        return gy * positive


class Abs(Function):
    """y = |x|, so dy/dx = sign(x): -1 below zero, 1 above, and 0 at the kink (as PyTorch)."""

    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).abs(x)

    def backward(self, gy):
        (x,) = self.saved
        return gy * get_array_module(x).sign(x)


class Clamp(Function):
    """y = min(max(x, low), high). Inside [low, high] y = x (dy/dx = 1); outside y is a
    constant (dy/dx = 0). At the bounds themselves PyTorch passes the gradient, so does tinylm."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        inside = get_array_module(x).ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x >= self.low
        if self.high is not None:
            inside &= x <= self.high
        self.save_for_backward(inside)
        return get_array_module(x).clip(x, self.low, self.high).astype(x.dtype, copy=False)

    def backward(self, gy):
        (inside,) = self.saved
        return gy * inside


class AsType(Function):
    """y = x converted to another float dtype; the gradient is converted back."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        self.source_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.source_dtype)


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def sqrt(x):
    return Sqrt()(x)


def tanh(x):
    return Tanh()(x)


def sigmoid(x):
    return Sigmoid()(x)


def relu(x):
    return ReLU()(x)


def abs(x):  # noqa: A001  (the familiar name)
    return Abs()(x)


def clamp(x, min=None, max=None):  # noqa: A002  (PyTorch's argument names)
    """``x`` limited to [min, max]; either bound may be None (left open)."""
    if min is None and max is None:
        raise ValueError("clamp: give at least one of min and max")
    return Clamp(min, max)(x)


def astype(x, dtype):
    """``x`` as ``dtype``. Differentiable between float dtypes; to or from an integer
    dtype the result carries no gradient."""
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    return AsType(dtype)(x)
