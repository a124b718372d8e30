# cython: language_level=3
"""LayerNorm as Cython kernels: the drop-ins for ``tinylm/reference/layer_norm.py``.

    forward:   μ, r = mean(x), 1/√(var(x) + ε);  y = (x - μ) r ⊙ w + b        (per row of x (N, D))
    backward:  dx = r (ĝ - mean ĝ - x̂ mean(ĝ x̂)),  ĝ = dy ⊙ w;  dw = Σₙ dy ⊙ x̂,  db = Σₙ dy

Same names, signatures and meaning as the reference. What differs, and why:

- Each row is read twice in the forward (mean, then variance of the centred values,
  both accumulated in double: the two-pass variance does not cancel catastrophically)
  and once more to write y; the backward recomputes x̂ on the fly instead of keeping an
  (N, D) temporary, and gets both row sums in one pass.
- dw and db sum over rows, which threads share: each thread sums its own block of rows
  into its own (D,) accumulator in double, and the accumulators are added at the end.
  So 1 and 2 threads agree to rounding, not bit for bit.
- The wrapper checks dtypes and shapes and makes the inputs contiguous.
"""

import numpy as np

cimport cython
from cython.parallel cimport prange

include "_math.pxi"

from tinylm.kernels import threads_for

from tinylm.kernels.cpu._checks import float_array, real_scalar



@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline void _forward_row(const real[:, ::1] x, Py_ssize_t n, const real[::1] weight, const real[::1] bias,
                              bint has_weight, bint has_bias, double eps,
                              real[:, ::1] y, real[::1] mean, real[::1] rstd) noexcept nogil:
    cdef Py_ssize_t j, dim = x.shape[1]
    cdef double total = 0, squares = 0, centred, row_mean, row_rstd
    cdef real value
    for j in range(dim):
        total += x[n, j]
    row_mean = total / dim
    for j in range(dim):
        centred = x[n, j] - row_mean
        squares += centred * centred
    row_rstd = 1 / sqrt(squares / dim + eps)
    mean[n], rstd[n] = <real>row_mean, <real>row_rstd
    for j in range(dim):
        value = <real>((x[n, j] - row_mean) * row_rstd)
        if has_weight:
            value = value * weight[j]
        if has_bias:
            value = value + bias[j]
        y[n, j] = value


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _forward(const real[:, ::1] x, const real[::1] weight, const real[::1] bias, bint has_weight,
                   bint has_bias, double eps, real[:, ::1] y, real[::1] mean, real[::1] rstd, int threads) noexcept nogil:
    cdef Py_ssize_t n
    for n in prange(x.shape[0], schedule="static", num_threads=threads):
        _forward_row(x, n, weight, bias, has_weight, has_bias, eps, y, mean, rstd)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline void _backward_rows(const real[:, ::1] grad_y, const real[:, ::1] x, const real[::1] weight,
                                bint has_weight, const real[::1] mean, const real[::1] rstd,
                                Py_ssize_t start, Py_ssize_t stop, real[:, ::1] grad_x,
                                double[:, ::1] partial_weight, double[:, ::1] partial_bias,
                                Py_ssize_t chunk) noexcept nogil:
    """Rows [start, stop); this chunk's dw, db go to row ``chunk`` of the partial sums."""
    cdef Py_ssize_t n, j, dim = x.shape[1]
    cdef double g_hat, x_hat, sum_g, sum_gx, r
    for n in range(start, stop):
        r = rstd[n]
        sum_g = 0
        sum_gx = 0
        for j in range(dim):
            x_hat = (x[n, j] - mean[n]) * r
            g_hat = grad_y[n, j] * weight[j] if has_weight else grad_y[n, j]
            sum_g += g_hat
            sum_gx += g_hat * x_hat
            if has_weight:
                partial_weight[chunk, j] += grad_y[n, j] * x_hat
                partial_bias[chunk, j] += grad_y[n, j]
        for j in range(dim):
            x_hat = (x[n, j] - mean[n]) * r
            g_hat = grad_y[n, j] * weight[j] if has_weight else grad_y[n, j]
            grad_x[n, j] = <real>(r * (g_hat - sum_g / dim - x_hat * (sum_gx / dim)))


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _backward(const real[:, ::1] grad_y, const real[:, ::1] x, const real[::1] weight, bint has_weight,
                    const real[::1] mean, const real[::1] rstd, real[:, ::1] grad_x,
                    double[:, ::1] partial_weight, double[:, ::1] partial_bias, int threads) noexcept nogil:
    cdef Py_ssize_t rows = x.shape[0], chunk_rows = (rows + threads - 1) // threads, c
    for c in prange(threads, schedule="static", num_threads=threads):  # one block of rows per thread
        _backward_rows(grad_y, x, weight, has_weight, mean, rstd, c * chunk_rows,
                       min((c + 1) * chunk_rows, rows), grad_x, partial_weight, partial_bias, c)


def _checked(op, x, weight, name="weight"):
    x = float_array(op, "x", x)
    if x.ndim != 2 or (x.shape[1] == 0 and x.shape[0] > 0):
        raise ValueError(f"{op}: x must be (N, D) with D >= 1, got shape {x.shape}")
    if weight is None:
        return np.ascontiguousarray(x), np.zeros(0, dtype=x.dtype)
    weight = np.asarray(weight)
    if weight.shape != (x.shape[1],) or weight.dtype != x.dtype:
        raise ValueError(f"{op}: {name} {weight.shape} {weight.dtype} must be ({x.shape[1]},) {x.dtype} for x {x.shape}")
    return np.ascontiguousarray(x), np.ascontiguousarray(weight)


def layer_norm_forward(x, weight, bias, eps):
    """x (N, D), weight and bias (D,) or None -> (y (N, D), mean (N,), rstd (N,))."""
    x, weight_array = _checked("layer_norm_forward", x, weight)
    _, bias_array = _checked("layer_norm_forward", x, bias, "bias")
    eps = real_scalar("layer_norm_forward", "eps", eps)
    if not eps >= 0:
        raise ValueError(f"layer_norm_forward: eps must be >= 0, got {eps}")
    rows = x.shape[0]
    y = np.empty_like(x)
    mean = np.empty(rows, dtype=x.dtype)
    rstd = np.empty(rows, dtype=x.dtype)
    threads = threads_for(x.size)
    if x.dtype == np.float32:
        _forward[float](x, weight_array, bias_array, weight is not None, bias is not None, eps, y, mean, rstd, threads)
    else:
        _forward[double](x, weight_array, bias_array, weight is not None, bias is not None, eps, y, mean, rstd, threads)
    return y, mean, rstd


def layer_norm_backward(grad_y, x, weight, mean, rstd):
    """-> (grad_x (N, D), grad_weight (D,) or None, grad_bias (D,) or None)."""
    op = "layer_norm_backward"
    x, weight_array = _checked(op, x, weight)
    grad_y = float_array(op, "grad_y", grad_y)
    if grad_y.shape != x.shape or grad_y.dtype != x.dtype:
        raise ValueError(f"{op}: grad_y {grad_y.shape} {grad_y.dtype} must match x {x.shape} {x.dtype}")
    rows, dim = x.shape
    mean = np.ascontiguousarray(mean, dtype=x.dtype)
    rstd = np.ascontiguousarray(rstd, dtype=x.dtype)
    if mean.shape != (rows,) or rstd.shape != (rows,):
        raise ValueError(f"{op}: mean {mean.shape} and rstd {rstd.shape} must both be ({rows},) for x {x.shape}")
    grad_y = np.ascontiguousarray(grad_y)
    grad_x = np.empty_like(x)
    threads = threads_for(x.size)
    threads = max(1, min(threads, rows))
    partial_weight = np.zeros((threads, dim), dtype=np.float64)  # (threads, D): one accumulator per thread
    partial_bias = np.zeros((threads, dim), dtype=np.float64)
    if rows:
        if x.dtype == np.float32:
            _backward[float](grad_y, x, weight_array, weight is not None, mean, rstd, grad_x,
                             partial_weight, partial_bias, threads)
        else:
            _backward[double](grad_y, x, weight_array, weight is not None, mean, rstd, grad_x,
                              partial_weight, partial_bias, threads)
    if weight is None:
        return grad_x, None, None
    return grad_x, partial_weight.sum(axis=0).astype(x.dtype), partial_bias.sum(axis=0).astype(x.dtype)
