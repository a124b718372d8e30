"""GELU kernels, reference versions: the tanh approximation (GPT-2's, PyTorch's
``approximate='tanh'``), then the exact GELU (PyTorch's default) at the end.

    y = ½ x (1 + tanh u),   u = c (x + 0.044715 x³),   c = √(2/π)

By the product and chain rules, with t = tanh u and dt/du = 1 - t²:

    dy/dx = ½ (1 + t) + ½ x (1 - t²) · c (1 + 3 · 0.044715 x²)

The backward recomputes t from x rather than keeping it: one array less to store, and
the tanh is cheap next to reading the arrays.
"""

from __future__ import annotations

import math

import numpy as np

from tinylm.backends import get_array_module

C = math.sqrt(2.0 / math.pi)
K = 0.044715


def gelu_forward(x):
    t = get_array_module(x).tanh(C * (x + K * (x * x * x)))  # x * x * x: NumPy's x**3 is ~80x slower
    return 0.5 * x * (1 + t)


def gelu_backward(grad_y, x):
    t = get_array_module(x).tanh(C * (x + K * (x * x * x)))
    return grad_y * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (C * (1 + 3 * K * (x * x))))


# ---- exact GELU (PyTorch's default, ``approximate='none'``)
#
#     y = x Φ(x),   Φ(x) = ½ (1 + erf(x / √2))   (the standard normal CDF)
#
# and since dΦ/dx = φ(x) = e^(-x²/2) / √(2π) (the standard normal density):
#
#     dy/dx = Φ(x) + x φ(x)
#
# No backend has a kernel for it; the op calls these on NumPy or CuPy arrays.

SQRT_2PI = math.sqrt(2.0 * math.pi)
_math_erf = np.frompyfunc(math.erf, 1, 1)  # math.erf on every element: correct to float64 rounding


def erf(x):
    """The error function, elementwise, in x's dtype: ``math.erf`` on NumPy arrays,
    CuPy's own erf on the GPU."""
    if get_array_module(x) is np:
        return np.asarray(_math_erf(x), dtype=np.asarray(x).dtype)
    from cupyx.scipy.special import erf as cupy_erf

    return cupy_erf(x)


def gelu_exact_forward(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2.0)))


def gelu_exact_backward(grad_y, x):
    cdf = 0.5 * (1 + erf(x / math.sqrt(2.0)))
    density = get_array_module(x).exp(-0.5 * (x * x)) / SQRT_2PI
    return grad_y * (cdf + x * density)
