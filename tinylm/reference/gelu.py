"""GELU kernels, reference versions (tanh approximation: GPT-2's, PyTorch's
``approximate='tanh'``).

    y = ½ x (1 + tanh u),   u = c (x + 0.044715 x³),   c = √(2/π)

By the product and chain rules, with t = tanh u and dt/du = 1 - t²:

    dy/dx = ½ (1 + t) + ½ x (1 - t²) · c (1 + 3 · 0.044715 x²)

The backward recomputes t from x rather than keeping it: one array less to store, and
the tanh is cheap next to reading the arrays.
"""

from __future__ import annotations

import math

from tinylm.backends import get_array_module

C = math.sqrt(2.0 / math.pi)
K = 0.044715


def gelu_forward(x):
    t = get_array_module(x).tanh(C * (x + K * (x * x * x)))  # x * x * x: NumPy's x**3 is ~80x slower
    return 0.5 * x * (1 + t)


def gelu_backward(grad_y, x):
    t = get_array_module(x).tanh(C * (x + K * (x * x * x)))
    return grad_y * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (C * (1 + 3 * K * (x * x))))
