# cython: language_level=3
"""LayerNorm as Cython kernels: the drop-ins for ``tinylm/reference/layer_norm.py``.

    forward:   μ, r = mean(x), 1/√(var(x) + ε);  y = (x - μ) r ⊙ w + b        (per row of x (N, D))
    backward:  dx = r (ĝ - mean ĝ - x̂ mean(ĝ x̂)),  ĝ = dy ⊙ w;  dw = Σₙ dy ⊙ x̂,  db = Σₙ dy

Same names, signatures and meaning as the reference. What differs, and why:

- Each row is read twice in the forward (mean, then variance of the centred values,
  both accumulated in double: the two-pass variance does not cancel catastrophically)
  and once more to write y; the backward recomputes x̂ on the fly instead of keeping an
  (N, D) temporary, and gets both row sums in one pass.
- Row sums run in 8 interleaved partial sums (a fixed order, the same for any thread
  count), so GCC vectorises them; a single running sum it may not reorder (the
  difference is in benchmarks/NOTES.md).
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

from tinylm.kernels.checks import float_array, real_scalar



DEF LANES = 8  # independent partial sums per row sum: one AVX-512 register of doubles


cdef inline double _sum_lanes(double* lanes) noexcept nogil:
    cdef double total = 0
    cdef int lane
    for lane in range(LANES):
        total += lanes[lane]
    return total


@cython.cdivision(True)
cdef inline void _row_moments(const real* x, Py_ssize_t dim, double* mean, double* rstd, double eps) noexcept nogil:
    """Mean and 1/√(var + ε) of one row, in double, by two passes (the variance of the
    centred values does not cancel catastrophically). Each sum runs in LANES interleaved
    partial sums, a fixed order GCC can vectorise (one running sum it cannot: reordering
    a floating-point sum changes its rounding, which it may not do on its own)."""
    cdef double lanes[LANES]
    cdef double centred, row_mean
    cdef Py_ssize_t j, lane, whole = dim - dim % LANES
    for lane in range(LANES):
        lanes[lane] = 0
    for j in range(0, whole, LANES):
        for lane in range(LANES):
            lanes[lane] += x[j + lane]
    for j in range(whole, dim):
        lanes[0] += x[j]
    row_mean = _sum_lanes(lanes) / dim
    for lane in range(LANES):
        lanes[lane] = 0
    for j in range(0, whole, LANES):
        for lane in range(LANES):
            centred = x[j + lane] - row_mean
            lanes[lane] += centred * centred
    for j in range(whole, dim):
        centred = x[j] - row_mean
        lanes[0] += centred * centred
    mean[0], rstd[0] = row_mean, 1 / sqrt(_sum_lanes(lanes) / dim + eps)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _forward_row(const real* x, Py_ssize_t dim, const real* weight, const real* bias,
                              bint has_weight, bint has_bias, double eps, real* y, real* mean,
                              real* rstd) noexcept nogil:
    cdef Py_ssize_t j
    cdef double row_mean, row_rstd
    _row_moments(x, dim, &row_mean, &row_rstd, eps)
    mean[0], rstd[0] = <real>row_mean, <real>row_rstd
    for j in range(dim):
        y[j] = <real>((x[j] - row_mean) * row_rstd)
    if has_weight:  # separate passes: one loop with both branches inside would not vectorise
        for j in range(dim):
            y[j] = y[j] * weight[j]
    if has_bias:
        for j in range(dim):
            y[j] = y[j] + bias[j]


@cython.boundscheck(False)
@cython.wraparound(False)
def _forward(const real[:, ::1] x, const real[::1] weight, const real[::1] bias, bint has_weight,
                   bint has_bias, double eps, real[:, ::1] y, real[::1] mean, real[::1] rstd, int threads):
    cdef Py_ssize_t n, dim = x.shape[1]
    cdef const real* w = &weight[0] if has_weight else NULL
    cdef const real* b = &bias[0] if has_bias else NULL
    for n in prange(x.shape[0], schedule="static", num_threads=threads, nogil=True):
        _forward_row(&x[n, 0], dim, w, b, has_weight, has_bias, eps, &y[n, 0], &mean[n], &rstd[n])


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline void _backward_row(const real* grad_y, const real* x, const real* weight, bint has_weight,
                               double mean, double r, Py_ssize_t dim, real* grad_x,
                               double* partial_weight, double* partial_bias) noexcept nogil:
    """One row: Σ ĝ and Σ ĝ x̂ (in LANES partial sums, as in ``_row_moments``), then dx,
    then the row's share of dw and db added to this thread's accumulators. ``weight`` is
    all ones for a LayerNorm without one (ĝ = dy · 1 exactly): a branch in these loops
    would stop them vectorising."""
    cdef double sum_lanes[LANES]
    cdef double dot_lanes[LANES]
    cdef double g_hat, x_hat, mean_g, mean_gx
    cdef Py_ssize_t j, lane, whole = dim - dim % LANES
    for lane in range(LANES):
        sum_lanes[lane] = 0
        dot_lanes[lane] = 0
    for j in range(0, whole, LANES):
        for lane in range(LANES):
            g_hat = grad_y[j + lane] * weight[j + lane]
            sum_lanes[lane] += g_hat
            dot_lanes[lane] += g_hat * ((x[j + lane] - mean) * r)
    for j in range(whole, dim):
        g_hat = grad_y[j] * weight[j]
        sum_lanes[0] += g_hat
        dot_lanes[0] += g_hat * ((x[j] - mean) * r)
    mean_g, mean_gx = _sum_lanes(sum_lanes) / dim, _sum_lanes(dot_lanes) / dim
    for j in range(dim):
        x_hat = (x[j] - mean) * r
        g_hat = grad_y[j] * weight[j]
        grad_x[j] = <real>(r * (g_hat - mean_g - x_hat * mean_gx))
    if has_weight:
        for j in range(dim):
            partial_weight[j] += grad_y[j] * ((x[j] - mean) * r)
        for j in range(dim):
            partial_bias[j] += grad_y[j]


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward(const real[:, ::1] grad_y, const real[:, ::1] x, const real[::1] weight, bint has_weight,
                    const real[::1] mean, const real[::1] rstd, real[:, ::1] grad_x,
                    double[:, ::1] partial_weight, double[:, ::1] partial_bias, int threads):
    """One block of rows per thread; each thread's dw, db go to its own row of the partial sums."""
    cdef Py_ssize_t rows = x.shape[0], dim = x.shape[1], chunk_rows = (rows + threads - 1) // threads, c, n
    for c in prange(threads, schedule="static", num_threads=threads, nogil=True):
        for n in range(c * chunk_rows, min((c + 1) * chunk_rows, rows)):
            _backward_row(&grad_y[n, 0], &x[n, 0], &weight[0], has_weight, mean[n], rstd[n], dim, &grad_x[n, 0],
                          &partial_weight[c, 0], &partial_bias[c, 0])


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
    _forward(x, weight_array, bias_array, weight is not None, bias is not None, eps, y, mean, rstd, threads)
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
    if weight is None:
        weight_array = np.ones(dim, dtype=x.dtype)  # ĝ = dy · 1: the same loops with or without a weight
    grad_x = np.empty_like(x)
    threads = threads_for(x.size)
    threads = max(1, min(threads, rows))
    partial_weight = np.zeros((threads, dim), dtype=np.float64)  # (threads, D): one accumulator per thread
    partial_bias = np.zeros((threads, dim), dtype=np.float64)
    if rows:
        _backward(grad_y, x, weight_array, weight is not None, mean, rstd, grad_x,
                         partial_weight, partial_bias, threads)
    if weight is None:
        return grad_x, None, None
    return grad_x, partial_weight.sum(axis=0).astype(x.dtype), partial_bias.sum(axis=0).astype(x.dtype)
