"""Arithmetic: + - * / ** and unary minus, each with its derivation.

Notation in the docstrings: ``L`` is the scalar loss, ``gy = dL/dy`` the gradient that
arrives from above, and the job of ``backward`` is ``dL/dx`` for every input ``x``.
Every binary op broadcasts, so every input gradient goes through ``sum_to`` (see
``broadcasting.py``).
"""

from __future__ import annotations

from tinylm.autograd import Function
from tinylm.backends import get_array_module
from tinylm.ops.broadcasting import as_operands, broadcast_shape, sum_to


class Add(Function):
    """y = a + b.

    dy/da = 1 and dy/db = 1 elementwise, so both inputs receive ``gy`` unchanged
    (summed back over the axes broadcasting stretched).
    """

    def forward(self, a, b):
        broadcast_shape("add", a.shape, b.shape)
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        a_shape, b_shape = self.shapes
        return sum_to(gy, a_shape), sum_to(gy, b_shape)


class Sub(Function):
    """y = a - b.  dy/da = 1, dy/db = -1."""

    def forward(self, a, b):
        broadcast_shape("sub", a.shape, b.shape)
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy):
        a_shape, b_shape = self.shapes
        return sum_to(gy, a_shape), sum_to(-gy, b_shape)


class Mul(Function):
    """y = a * b.  dy/da = b and dy/db = a, so dL/da = gy * b and dL/db = gy * a."""

    def forward(self, a, b):
        broadcast_shape("mul", a.shape, b.shape)
        self.save_for_backward(a, b)
        return a * b

    def backward(self, gy):
        a, b = self.saved
        return sum_to(gy * b, a.shape), sum_to(gy * a, b.shape)


class Div(Function):
    """y = a / b.  dy/da = 1/b and dy/db = -a/b² = -y/b."""

    def forward(self, a, b):
        broadcast_shape("div", a.shape, b.shape)
        self.save_for_backward(a, b)
        return a / b

    def backward(self, gy):
        a, b = self.saved
        ga = gy / b
        gb = -ga * a / b if self.needs_input_grad[1] else None
        return sum_to(ga, a.shape), (None if gb is None else sum_to(gb, b.shape))


class Pow(Function):
    """y = a ** b.

    dy/da = b · a^(b-1) (the power rule) and dy/db = a^b · ln a (since a^b = e^(b ln a)).
    The second is computed only when ``b`` needs a gradient: ``ln a`` is undefined for
    a ≤ 0, which is common in ``x ** 2`` where only ``x`` is differentiated.
    """

    def forward(self, a, b):
        broadcast_shape("pow", a.shape, b.shape)
        y = a**b
        self.save_for_backward(a, b, y)
        return y

    def backward(self, gy):
        a, b, y = self.saved
        xp = get_array_module(gy)
        ga = sum_to(gy * b * a ** (b - 1), a.shape) if self.needs_input_grad[0] else None
        # At a = 0, a^b is flat in b (0 for every b > 0): gradient 0 there, as PyTorch.
        log_a = xp.log(xp.where(a == 0, 1, a)) if self.needs_input_grad[1] else None
        gb = sum_to(gy * y * log_a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    """y = -x.  dy/dx = -1."""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


def add(a, b):
    return Add()(*as_operands("add", a, b))


def sub(a, b):
    return Sub()(*as_operands("sub", a, b))


def mul(a, b):
    return Mul()(*as_operands("mul", a, b))


def div(a, b):
    return Div()(*as_operands("div", a, b))


def pow(a, b):  # noqa: A001  (mirrors Python's operator name)
    return Pow()(*as_operands("pow", a, b))


def neg(x):
    return Neg()(x)
