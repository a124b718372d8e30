# cython: language_level=3
"""GELU (tanh approximation) as Cython kernels: the drop-ins for
``tinylm/reference/gelu.py``, whose docstring has the derivative.

Same names, signatures and meaning. What differs, and why: one pass over the array,
where the reference makes about eight (N,) temporaries (x³, u, t, 1 + t, ...); and
½(1 + tanh u) is computed as σ(2u) = 1 / (1 + e^-2u) (the same number), with
``tinylm_math.h``'s vectorisable exp. For x below about -4, 1 + tanh u cancels to a few
float32 ulp or to 0 while σ(2u) keeps its digits, so this kernel is the more accurate
of the two there (the tests compare both against the reference run in float64). The
derivative in the same terms, s = σ(2u): dy/dx = s + 2 x s (1 - s) c (1 + 3 · 0.044715 x²).
The loops are branch-free over two or three arrays, so GCC vectorises them.
"""

import numpy as np

cimport cython
from cython.parallel cimport prange

include "_math.pxi"

from tinylm.kernels import threads_for
from tinylm.kernels.checks import float_array

cdef double C = 0.7978845608028654  # √(2/π)
cdef double K = 0.044715


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _forward_chunk(const real* x, real* y, Py_ssize_t n) noexcept nogil:
    # The constants as locals: GCC cannot keep a module global in a register across the
    # stores to y (y might point at it), and that alone stops it from vectorising.
    cdef real c = <real>C, cubic = <real>K, one = 1, three = 3  # real, not C double, literals
    cdef Py_ssize_t k
    cdef real s
    for k in range(n):
        s = _sigmoid((c + c) * (x[k] + cubic * (x[k] * x[k] * x[k])))  # σ(2u) = ½(1 + tanh u)
        y[k] = x[k] * s


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _backward_chunk(const real* grad_y, const real* x, real* grad_x, Py_ssize_t n) noexcept nogil:
    cdef real c = <real>C, cubic = <real>K, one = 1, three = 3  # real, not C double, literals
    cdef Py_ssize_t k
    cdef real s
    for k in range(n):
        s = _sigmoid((c + c) * (x[k] + cubic * (x[k] * x[k] * x[k])))
        grad_x[k] = grad_y[k] * (s + (x[k] + x[k]) * s * (one - s) * (c * (one + three * cubic * (x[k] * x[k]))))


def _forward(const real[::1] x, real[::1] y, int threads):
    cdef Py_ssize_t n = x.shape[0], chunk = (n + threads - 1) // threads, c, start
    for c in prange(threads, schedule="static", num_threads=threads, nogil=True):  # one contiguous chunk per thread
        start = c * chunk
        if start < n:
            _forward_chunk(&x[start], &y[start], min(chunk, n - start))


def _backward(const real[::1] grad_y, const real[::1] x, real[::1] grad_x, int threads):
    cdef Py_ssize_t n = x.shape[0], chunk = (n + threads - 1) // threads, c, start
    for c in prange(threads, schedule="static", num_threads=threads, nogil=True):
        start = c * chunk
        if start < n:
            _backward_chunk(&grad_y[start], &x[start], &grad_x[start], min(chunk, n - start))


def gelu_forward(x):
    """y = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))), elementwise, any shape."""
    x = float_array("gelu_forward", "x", x)
    flat = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(flat)
    if flat.size:
        _forward(flat, y, threads_for(flat.size))
    return y.reshape(x.shape)


def gelu_backward(grad_y, x):
    """dL/dx = dL/dy · dy/dx, elementwise."""
    x = float_array("gelu_backward", "x", x)
    grad_y = float_array("gelu_backward", "grad_y", grad_y)
    if grad_y.shape != x.shape or grad_y.dtype != x.dtype:
        raise ValueError(f"gelu_backward: grad_y {grad_y.shape} {grad_y.dtype} must match x {x.shape} {x.dtype}")
    flat_x = np.ascontiguousarray(x).reshape(-1)
    flat_g = np.ascontiguousarray(grad_y).reshape(-1)
    grad_x = np.empty_like(flat_x)
    if flat_x.size:
        _backward(flat_g, flat_x, grad_x, threads_for(flat_x.size))
    return grad_x.reshape(x.shape)
