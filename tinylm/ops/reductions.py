"""Reductions over axes: sum, mean, amax/amin, max/min, argmax/argmin, var, std, norm.

Each backward first puts the reduced axes back as size-1 axes (what ``keepdims=True``
would have returned) so the gradient broadcasts against the input's shape.

Arguments follow PyTorch: ``dim`` (an int, a tuple, or None for all) and ``keepdim``.
NumPy's spellings ``axis=`` and ``keepdims=`` are accepted as aliases.
"""

from __future__ import annotations

import math
from collections import namedtuple

from tinylm.autograd import Function, Tensor
from tinylm.backends import get_array_module, index_add
from tinylm.ops.axes import dim_args, keepdims_shape, normalize_axes
from tinylm.ops.shape import squeeze_axes


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
    """y = max x over ``axes`` (or min, with ``smallest=True``). Near a unique maximum y
    equals that one element, so it alone receives gy (dy/dx = 1 there, 0 elsewhere).
    Where several elements tie for the maximum, y is not differentiable; tinylm splits gy
    equally among them (PyTorch's ``amax`` and ``max()`` do the same)."""

    def __init__(self, axes, keepdims, smallest=False):
        self.axes, self.keepdims, self.smallest = axes, keepdims, smallest

    def forward(self, x):
        name = "min" if self.smallest else "max"
        empty = [a for a in self.axes if x.shape[a] == 0]
        if empty:
            raise ValueError(f"{name}: axis {empty[0]} of shape {tuple(x.shape)} is empty; "
                             f"an empty {name} has no value")
        y = (x.min if self.smallest else x.max)(axis=self.axes, keepdims=True)
        self.save_for_backward(x, y)
        return y if self.keepdims else y.reshape([s for i, s in enumerate(y.shape) if i not in self.axes])

    def backward(self, gy):
        x, y = self.saved
        is_max = x == y
        share = is_max / is_max.sum(axis=self.axes, keepdims=True).astype(x.dtype)
        return gy.reshape(y.shape) * share.astype(x.dtype)


class Norm(Function):
    """y = (Σ |x|ᵖ)^(1/p) over ``axes``, for p > 0 (p = 2: the Euclidean length).

        dy/dx = (1/p) (Σ |x|ᵖ)^(1/p - 1) · p |x|^(p-1) sign(x) = sign(x) |x|^(p-1) / y^(p-1)

    For p = 2 that is x / y. Where y = 0 (every x zero) the norm has no gradient; tinylm
    returns 0 there, PyTorch's choice.
    """

    def __init__(self, p, axes, keepdims):
        self.p, self.axes, self.keepdims = p, axes, keepdims

    def forward(self, x):
        xp = get_array_module(x)
        y = (xp.abs(x) ** self.p).sum(axis=self.axes, keepdims=True) ** (1 / self.p)
        self.save_for_backward(x, y)
        return y if self.keepdims else y.reshape([s for i, s in enumerate(y.shape) if i not in self.axes])

    def backward(self, gy):
        x, y = self.saved
        xp = get_array_module(x)
        safe_y = xp.where(y == 0, 1, y)
        slope = xp.sign(x) * xp.abs(x) ** (self.p - 1) / safe_y ** (self.p - 1)
        return gy.reshape(y.shape) * xp.where(y == 0, 0, slope).astype(x.dtype, copy=False)


class TakeAlongDim(Function):
    """y = x picked at ``indices`` along ``axis`` (``np.take_along_axis``). Each y is one
    x, so that x receives its gy; the rest get zero. Indices may repeat, so the scatter
    adds (``np.put_along_axis`` would keep only the last)."""

    def __init__(self, indices, axis):
        self.indices, self.axis = indices, axis

    def forward(self, x):
        self.shape = x.shape
        return get_array_module(x).take_along_axis(x, self.indices, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        # The position of y[i, j, ...] in x: indices along the axis, its own place elsewhere.
        ndim = len(self.shape)
        where = tuple(self.indices if i == self.axis
                      else xp.arange(self.shape[i]).reshape([-1 if j == i else 1 for j in range(ndim)])
                      for i in range(ndim))
        gx = xp.zeros(self.shape, dtype=gy.dtype)
        index_add(gx, where, gy)
        return gx


def sum(x, dim=None, keepdim=False, *, axis=None, keepdims=None):  # noqa: A001  (the familiar name)
    dim, keepdim = dim_args("sum", dim, keepdim, axis, keepdims)
    return Sum(normalize_axes("sum", dim, x.ndim), keepdim)(x)


def mean(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    dim, keepdim = dim_args("mean", dim, keepdim, axis, keepdims)
    return Mean(normalize_axes("mean", dim, x.ndim), keepdim)(x)


def amax(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """The largest value over ``dim`` (an int, tuple, or None for all); ties share the gradient."""
    dim, keepdim = dim_args("amax", dim, keepdim, axis, keepdims)
    return Max(normalize_axes("amax", dim, x.ndim), keepdim)(x)


def amin(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    dim, keepdim = dim_args("amin", dim, keepdim, axis, keepdims)
    return Max(normalize_axes("amin", dim, x.ndim), keepdim, smallest=True)(x)


# What PyTorch's x.max(dim) returns: a tuple that also names its two parts.
MaxResult = namedtuple("max", ["values", "indices"])
MinResult = namedtuple("min", ["values", "indices"])


def _arg_extreme(op, x, dim, keepdim, smallest):
    if x.size == 0:
        raise ValueError(f"{op}: the tensor of shape {x.shape} is empty; it has no {op[3:]}")
    pick = x.data.argmin if smallest else x.data.argmax
    if dim is None:  # an index into the flattened tensor, as PyTorch
        index = pick()
        shape = (1,) * x.ndim if keepdim else ()
        return Tensor(get_array_module(x.data).asarray(index, dtype="int64").reshape(shape))
    (axis,) = normalize_axes(op, dim, x.ndim)
    return Tensor(pick(axis=axis, keepdims=keepdim).astype("int64"))


def argmax(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Where the largest value is along ``dim`` (the first, on a tie); None: in the flattened tensor."""
    dim, keepdim = dim_args("argmax", dim, keepdim, axis, keepdims)
    return _arg_extreme("argmax", x, dim, keepdim, smallest=False)


def argmin(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    dim, keepdim = dim_args("argmin", dim, keepdim, axis, keepdims)
    return _arg_extreme("argmin", x, dim, keepdim, smallest=True)


def _extreme_along(op, x, dim, keepdim, axis, keepdims, smallest):
    dim, keepdim = dim_args(op, dim, keepdim, axis, keepdims)
    if dim is None:  # x.max(): the scalar, ties sharing the gradient
        return Max(normalize_axes(op, None, x.ndim), False, smallest)(x)
    if not isinstance(dim, int):
        raise TypeError(f"{op}: dim must be one int (got {dim!r}); for several use amax/amin")
    (axis,) = normalize_axes(op, dim, x.ndim)
    indices = _arg_extreme("argmin" if smallest else "argmax", x, axis, True, smallest)
    values = TakeAlongDim(indices.data, axis)(x)
    if not keepdim:
        values, indices = squeeze_axes(values, (axis,)), squeeze_axes(indices, (axis,))
    return (MinResult if smallest else MaxResult)(values, indices)


def max(x, dim=None, keepdim=False, *, axis=None, keepdims=None):  # noqa: A001
    """PyTorch's ``max``: with no ``dim`` the largest value (a 0-d tensor); with ``dim``
    the pair ``(values, indices)`` along it. The gradient goes to the element the index
    names (a tie's first), as in PyTorch."""
    return _extreme_along("max", x, dim, keepdim, axis, keepdims, smallest=False)


def min(x, dim=None, keepdim=False, *, axis=None, keepdims=None):  # noqa: A001
    return _extreme_along("min", x, dim, keepdim, axis, keepdims, smallest=True)


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None, keepdims=None):
    """Σ (x - mean)² / (n - correction) over ``dim``. ``correction=1`` (the default, as in
    PyTorch) is Bessel's unbiased estimate; ``unbiased=False`` means ``correction=0``.
    Built from mean, sub, mul and sum, so its gradient comes from theirs."""
    dim, keepdim = dim_args("var", dim, keepdim, axis, keepdims)
    if unbiased is not None and correction is not None:
        raise TypeError("var: give unbiased or correction, not both")
    correction = (1 if unbiased is None or unbiased else 0) if correction is None else correction
    axes = normalize_axes("var", dim, x.ndim)
    count = math.prod(x.shape[a] for a in axes)
    centred = x - mean(x, axes, keepdim=True)
    return sum(centred * centred, axes, keepdim) / float(count - correction)


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None, keepdims=None):
    """√var (see ``var`` for the arguments)."""
    from tinylm.ops.elementwise import sqrt

    return sqrt(var(x, dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims))


def norm(x, p=2, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """The p-norm over ``dim`` (all elements by default, i.e. the Frobenius norm for p=2);
    ``p="fro"`` is 2 and ``p=inf`` the largest |x|."""
    dim, keepdim = dim_args("norm", dim, keepdim, axis, keepdims)
    axes = normalize_axes("norm", dim, x.ndim)
    if p == "fro":
        p = 2
    if p == math.inf:
        from tinylm.ops.elementwise import abs

        return Max(axes, keepdim)(abs(x))
    if not isinstance(p, (int, float)) or not p > 0:
        raise ValueError(f"norm: p must be positive (or inf, or 'fro'), got {p!r}")
    return Norm(float(p), axes, keepdim)(x)
