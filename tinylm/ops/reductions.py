"""Reductions over axes: sum, mean, max.

Each backward first puts the reduced axes back as size-1 axes (what ``keepdims=True``
would have returned) so the gradient broadcasts against the input's shape.
"""

from __future__ import annotations

import math

from tinylm.autograd import Function
from tinylm.backends import get_array_module
from tinylm.ops.axes import keepdims_shape, normalize_axes


class Sum(Function):
    """y = Σ x over ``axes``. Every summed x contributes with weight 1, so each x
    receives the gradient of the y it was summed into: gy broadcast back to x's shape."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.broadcast_to(gy.reshape(keepdims_shape(self.shape, self.axes)), self.shape)


class Mean(Function):
    """y = (1/n) Σ x over ``axes``, n the number of elements averaged: each x receives gy / n."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.count = math.prod(x.shape[a] for a in self.axes)
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        g = gy.reshape(keepdims_shape(self.shape, self.axes)) / gy.dtype.type(self.count or 1)
        return xp.broadcast_to(g, self.shape)


class Max(Function):
    """y = max x over ``axes``. Near a unique maximum y equals that one element, so it
    alone receives gy (dy/dx = 1 there, 0 elsewhere). Where several elements tie for the
    maximum, y is not differentiable; tinylm splits gy equally among them (PyTorch's
    ``amax`` does the same)."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        empty = [a for a in self.axes if x.shape[a] == 0]
        if empty:
            raise ValueError(f"max: axis {empty[0]} of shape {tuple(x.shape)} is empty; an empty max has no value")
        y = x.max(axis=self.axes, keepdims=True)
        self.save_for_backward(x, y)
        return y if self.keepdims else y.reshape([s for i, s in enumerate(y.shape) if i not in self.axes])

    def backward(self, gy):
        x, y = self.saved
        is_max = x == y
        share = is_max / is_max.sum(axis=self.axes, keepdims=True).astype(x.dtype)
        return gy.reshape(y.shape) * share.astype(x.dtype)


def sum(x, axis=None, keepdims=False):  # noqa: A001  (the familiar name)
    return Sum(normalize_axes("sum", axis, x.ndim), keepdims)(x)


def mean(x, axis=None, keepdims=False):
    return Mean(normalize_axes("mean", axis, x.ndim), keepdims)(x)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return Max(normalize_axes("max", axis, x.ndim), keepdims)(x)
