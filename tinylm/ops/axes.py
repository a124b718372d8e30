"""Checking and normalising axis arguments, with errors that name the op."""

from __future__ import annotations

import numpy as np


def normalize_axis(op: str, axis: int, ndim: int) -> int:
    """One axis, negatives counted from the end, as a non-negative int."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor with {ndim} dimensions")
    return axis % ndim


def normalize_axes(op: str, axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (None for all, an int or a tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (int(axis),) if isinstance(axis, (int, np.integer)) else tuple(int(a) for a in axis)
    normalized = tuple(sorted(normalize_axis(op, a, ndim) for a in axes))
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{op}: axis {axis} names an axis twice")
    return normalized


def keepdims_shape(shape: tuple, axes: tuple[int, ...]) -> tuple:
    """``shape`` with every reduced axis set to 1 (what ``keepdims=True`` returns)."""
    return tuple(1 if i in axes else size for i, size in enumerate(shape))


def dim_args(op: str, dim, keepdim, axis=None, keepdims=None):
    """PyTorch's ``dim``/``keepdim``, or NumPy's ``axis``/``keepdims`` (aliases); not both."""
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{op}: got both dim={dim!r} and axis={axis!r}; they are the same argument")
        dim = axis
    if keepdims is not None:
        if keepdim:
            raise TypeError(f"{op}: got both keepdim and keepdims; they are the same argument")
        keepdim = keepdims
    if isinstance(dim, list):
        dim = tuple(dim)
    return dim, bool(keepdim)
