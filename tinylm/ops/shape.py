"""Ops that move elements around without changing them: reshape, permute, indexing,
concat, stack, split.

Each output element *is* some input element, so the backward of every op here routes
each gradient back to the position it came from: the inverse movement.
"""

from __future__ import annotations

import itertools

import numpy as np

from tinylm.autograd import Function, Tensor
from tinylm.backends import get_array_module, index_add
from tinylm.ops.axes import normalize_axis


class Reshape(Function):
    """Same elements, same order, new shape: the gradient is gy reshaped back."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.input_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape {tuple(x.shape)} ({x.size} elements) into {self.shape}"
            ) from None

    def backward(self, gy):
        return gy.reshape(self.input_shape)


class Permute(Function):
    """y = x with its axes reordered: y.shape[i] = x.shape[dims[i]]. Reordering the
    gradient's axes by the inverse permutation puts every value back in place."""

    def __init__(self, dims):
        self.dims = dims

    def forward(self, x):
        return x.transpose(self.dims)

    def backward(self, gy):
        return gy.transpose(tuple(np.argsort(self.dims)))


class GetItem(Function):
    """y = x[index] (slices, integers, integer or boolean arrays, ``None``, ``...``).

    The gradient is zero except at the positions read, which receive gy. An integer
    array may read one position several times; each read contributes, so the gradient
    is scattered with ``index_add`` (``np.add.at``), which adds repeats instead of
    keeping the last one.
    """

    def __init__(self, index):
        self.index = index
        parts = index if isinstance(index, tuple) else (index,)
        # Basic indexing (ints, slices, None, ...) reads each position at most once;
        # anything else (arrays, lists, tuples inside the index) may read one twice.
        basic = (int, np.integer, slice, type(None), type(Ellipsis))
        self.advanced = not all(isinstance(p, basic) for p in parts)

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        try:
            return x[self.index]
        except IndexError as exc:
            raise IndexError(f"getitem: {exc} (tensor shape {tuple(x.shape)})") from None

    def backward(self, gy):
        gx = get_array_module(gy).zeros(self.shape, dtype=self.dtype)
        if self.advanced:
            index_add(gx, self.index, gy)
        else:  # basic indexing reads each position at most once
            gx[self.index] = gy
        return gx


class Concat(Function):
    """y = the inputs joined along ``axis``; gy is cut at the same boundaries."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return get_array_module(xs[0]).concatenate(xs, axis=self.axis)

    def backward(self, gy):
        bounds = list(itertools.accumulate(self.sizes))[:-1]
        return tuple(get_array_module(gy).split(gy, bounds, axis=self.axis))


class Stack(Function):
    """y = the inputs stacked along a new ``axis``; input i receives gy's slice i there."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        return get_array_module(xs[0]).stack(xs, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        return tuple(xp.take(gy, i, axis=self.axis) for i in range(gy.shape[self.axis]))


class Clone(Function):
    """y = a copy of x: dy/dx = 1, so gy passes through unchanged."""

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        return gy


class Split(Function):
    """The inverse of concat: several outputs, each a piece of x along ``axis``.

    Backward joins the pieces' gradients. A piece that did not reach the loss sends no
    gradient (``None``); its part of x then gets zeros.
    """

    def __init__(self, sizes, axis):
        self.sizes, self.axis = sizes, axis

    def forward(self, x):
        self.dtype = x.dtype
        bounds = list(itertools.accumulate(self.sizes))[:-1]
        pieces = tuple(get_array_module(x).split(x, bounds, axis=self.axis))
        self.piece_shapes = [p.shape for p in pieces]
        return pieces

    def backward(self, *gys):
        xp = next(get_array_module(g) for g in gys if g is not None)
        filled = [g if g is not None else xp.zeros(s, dtype=self.dtype) for g, s in zip(gys, self.piece_shapes)]
        return xp.concatenate(filled, axis=self.axis)


# ------------------------------------------------------------------------- functions


def _shape_args(op: str, shape) -> tuple:
    """Accept ``f(x, 2, 3)`` and ``f(x, (2, 3))`` alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if not all(isinstance(s, (int, np.integer)) for s in shape):
        raise TypeError(f"{op}: sizes must be integers, got {shape}")
    return tuple(int(s) for s in shape)


def reshape(x, *shape):
    return Reshape(_shape_args("reshape", shape))(x)


def view(x, *shape):
    """PyTorch's ``view``. tinylm's arrays have no shared-storage views to protect, so
    this is ``reshape`` (one size may be -1)."""
    return Reshape(_shape_args("view", shape))(x)


def flatten(x, start_dim: int = 0, end_dim: int = -1):
    """Merge axes ``start_dim`` to ``end_dim`` (inclusive) into one."""
    if x.ndim == 0:
        return reshape(x, 1)
    start, end = normalize_axis("flatten", start_dim, x.ndim), normalize_axis("flatten", end_dim, x.ndim)
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = 1
    for size in x.shape[start:end + 1]:
        merged *= size
    return reshape(x, *x.shape[:start], merged, *x.shape[end + 1:])


def unsqueeze(x, dim: int):
    """A new size-1 axis at ``dim`` (counted in the result: -1 appends one)."""
    axis = normalize_axis("unsqueeze", dim, x.ndim + 1)
    return reshape(x, *x.shape[:axis], 1, *x.shape[axis:])


def squeeze_axes(x, axes):
    """Drop the given axes, which must have size 1."""
    return reshape(x, *(size for i, size in enumerate(x.shape) if i not in axes))


def squeeze(x, dim=None):
    """Drop size-1 axes: all of them, or those among ``dim`` (an int or tuple). As in
    PyTorch, a named axis whose size is not 1 is left alone, not an error."""
    if dim is None:
        axes = range(x.ndim)
    else:
        dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
        axes = [normalize_axis("squeeze", d, max(x.ndim, 1)) for d in dims]
    return squeeze_axes(x, {a for a in axes if a < x.ndim and x.shape[a] == 1})


def permute(x, *dims):
    dims = _shape_args("permute", dims)
    if sorted(d % max(x.ndim, 1) for d in dims) != list(range(x.ndim)) or len(dims) != x.ndim:
        raise ValueError(f"permute: dims {dims} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    return Permute(tuple(d % x.ndim for d in dims))(x)


def transpose(x, dim0: int, dim1: int):
    """Swap two axes (PyTorch's ``transpose``)."""
    dims = list(range(x.ndim))
    a, b = normalize_axis("transpose", dim0, x.ndim), normalize_axis("transpose", dim1, x.ndim)
    dims[a], dims[b] = dims[b], dims[a]
    return Permute(tuple(dims))(x)


def clone(x):
    """A copy with its own array, still in the graph (``detach`` is the one that leaves it)."""
    return Clone()(x)


def getitem(x, index):
    def raw(part):  # tensors used as indices are read as their arrays
        return part.data if isinstance(part, Tensor) else part

    index = tuple(raw(p) for p in index) if isinstance(index, tuple) else raw(index)
    return GetItem(index)(x)


def _check_joinable(op: str, xs, axis_to_skip) -> None:
    if len(xs) == 0:
        raise ValueError(f"{op}: needs at least one tensor")
    first = xs[0]
    for x in xs[1:]:
        if x.dtype != first.dtype:
            raise TypeError(f"{op}: dtypes differ ({first.dtype} and {x.dtype}); tinylm does not convert "
                            "silently (it would hide a copy and, to float32, lost precision): use .astype()")
        if x.ndim != first.ndim or any(
            a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis_to_skip
        ):
            shapes = ", ".join(str(t.shape) for t in xs)
            where = f" except along axis {axis_to_skip}" if axis_to_skip is not None else ""
            raise ValueError(f"{op}: shapes {shapes} must match{where}")


def concat(tensors, axis: int = 0, *, dim=None):
    """Join along an existing axis; ``tinylm.cat(tensors, dim=...)`` is the same."""
    if dim is not None:
        axis = dim
    tensors = list(tensors)
    _check_joinable("concat", tensors, None if not tensors else normalize_axis("concat", axis, tensors[0].ndim))
    return Concat(normalize_axis("concat", axis, tensors[0].ndim))(*tensors)


def stack(tensors, axis: int = 0, *, dim=None):
    if dim is not None:
        axis = dim
    tensors = list(tensors)
    _check_joinable("stack", tensors, None)
    return Stack(normalize_axis("stack", axis, tensors[0].ndim + 1))(*tensors)


def split(x, split_size_or_sections, axis: int = 0, *, dim=None):
    """PyTorch's ``split``: an int gives pieces of that size (the last may be smaller),
    a list gives the size of each piece, which must add up to the axis length."""
    if dim is not None:
        axis = dim
    axis = normalize_axis("split", axis, x.ndim)
    length = x.shape[axis]
    if isinstance(split_size_or_sections, (int, np.integer)):
        step = int(split_size_or_sections)
        if step <= 0:
            raise ValueError(f"split: split size must be positive, got {step}")
        sizes = [min(step, length - start) for start in range(0, length, step)] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != length or any(s < 0 for s in sizes):
            raise ValueError(f"split: sizes {sizes} do not add up to {length}, the length of axis {axis} of {x.shape}")
    return Split(sizes, axis)(x)
