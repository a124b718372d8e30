"""Comparisons (no gradient) and choosing between values: where, masked_fill."""

from __future__ import annotations

import operator

from tinylm.autograd import Function, Tensor
from tinylm.backends import get_array_module
from tinylm.ops.broadcasting import as_operands, broadcast_shape, sum_to


class Compare(Function):
    """a < b and friends give booleans: a step function, whose gradient is zero
    wherever it exists, so a comparison starts no gradient path (its output is a
    bool tensor, which never requires grad)."""

    def __init__(self, name, compare):
        self.name, self.compare = name, compare

    def forward(self, a, b):
        broadcast_shape(self.name, a.shape, b.shape)
        return self.compare(a, b)

    def backward(self, gy):  # never reached: bool outputs carry no gradient
        raise RuntimeError(f"{self.name}: comparisons have no gradient")


def _comparison(name, compare):
    def op(a, b):
        return Compare(name, compare)(*as_operands(name, a, b))

    op.__name__ = name
    return op


eq = _comparison("eq", operator.eq)
ne = _comparison("ne", operator.ne)
lt = _comparison("lt", operator.lt)
le = _comparison("le", operator.le)
gt = _comparison("gt", operator.gt)
ge = _comparison("ge", operator.ge)


class Where(Function):
    """y = a where cond else b. Each y is a copy of one input, so gy goes to a where
    cond holds and to b elsewhere (zero to the other), then back to each shape."""

    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        broadcast_shape("where", self.condition.shape, a.shape, b.shape)
        self.shapes = a.shape, b.shape
        return get_array_module(a).where(self.condition, a, b)

    def backward(self, gy):
        a_shape, b_shape = self.shapes
        zero = gy.dtype.type(0)
        xp = get_array_module(gy)
        return sum_to(xp.where(self.condition, gy, zero), a_shape), sum_to(xp.where(self.condition, zero, gy), b_shape)


def _condition(op: str, condition):
    array = condition.data if isinstance(condition, Tensor) else condition
    if getattr(array, "dtype", None) is None or array.dtype.kind != "b":
        raise TypeError(f"{op}: the condition must be a bool tensor, "
                        f"got {getattr(array, 'dtype', type(array).__name__)}")
    return array


def where(condition, a, b):
    """``a`` where ``condition`` is true, else ``b`` (tensors or scalars, broadcast)."""
    return Where(_condition("where", condition))(*as_operands("where", a, b))


def masked_fill(x, mask, value):
    """``x`` with ``value`` wherever ``mask`` is true (e.g. -inf above a causal diagonal).
    The filled positions get no gradient; the rest pass gy through."""
    mask = _condition("masked_fill", mask)
    if broadcast_shape("masked_fill", x.shape, mask.shape) != x.shape:
        raise ValueError(f"masked_fill: mask of shape {tuple(mask.shape)} does not broadcast to {x.shape}")
    return Where(mask)(*as_operands("masked_fill", value, x))
