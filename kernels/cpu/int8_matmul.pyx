# cython: language_level=3
"""int8 weights as a Cython kernel: the drop-in for ``tinylm/reference/int8_matmul.py``.

``int8_matmul(x (M, K), weight (N, K) int8, scale (N,) float32) -> (M, N)`` =
x @ (scale[:, None] · weight)ᵀ, as the reference. What differs, and why:

- M = 1 (sampling at batch 1, the case int8 weights are for): a matrix-vector product
  in C (``tinylm_int8.h``): each int8 weight converted to float and multiplied into a
  float32 accumulator, four rows per pass, with AVX-512 or AVX2 + FMA vectors where the
  build has them; each row's sum scaled once at the end. The reference converts the
  whole weight matrix to float first (a float32 copy, 4x the bytes) and then runs sgemv
  on it. Big products split their rows over the OpenMP threads (see ``PARALLEL_MIN_WEIGHTS``).
- M > 1: blocks of weight rows are dequantized (s · q, float32) into a 256 KB buffer
  (it stays in L2), and NumPy's sgemm multiplies x by each block into its columns of
  the output. The dequantization costs about one matrix-vector product per call, which
  sgemm repays from a few rows of x on. Measured on the shared 2-core machine, (4096,
  1024), one thread: M = 2: 0.42 ms blocked, 0.39 ms as two matrix-vector products;
  M = 8: 0.89 ms against 1.24 ms; M = 64: 12.5 ms against 17.8 ms (the machine was
  loaded: sgemm's own timings there varied several-fold). Without NumPy's BLAS
  (``blas.py``) each row of x takes the matrix-vector path.
- float64 x: the reference serves (after the same checks); the sampling path is float32.

Results agree with the reference to float32 rounding (the sums run in another order),
not bit for bit; with integer-valued x and power-of-two scales every product and sum is
exact, and the results are equal. A weight of -128 (which ``quantize_per_channel``
never makes, but a file may hold) is computed with like any other value.

The wrapper checks everything the C code assumes (dtypes, shapes) and makes every
array C-contiguous, so the loops never index outside the arrays.
"""

import numpy as np

cimport cython
from libc.stdint cimport int8_t

include "_math.pxi"
include "_blas.pxi"

from tinylm.kernels import get_num_threads, get_parallel_threshold
from tinylm.kernels.checks import as_array, float_dtype

cdef extern from "tinylm_int8.h" nogil:
    const char* tinylm_int8_isa()
    void tinylm_int8_matvec(const float* x, const int8_t* q, Py_ssize_t ldq, const float* scale, float* y,
                            Py_ssize_t rows, Py_ssize_t cols, int accumulate, int threads)
    void tinylm_int8_dequantize(const int8_t* q, Py_ssize_t ldq, const float* scale, float* w,
                                Py_ssize_t rows, Py_ssize_t cols)

# A product with at least this many weights splits its rows over the OpenMP threads
# (fewer: one thread). Measured on the shared 2-core machine at M = 1 (best of many
# short runs): (1024, 256) took 14 us on one thread and 11 us on two, (4096, 1024) 192
# and 108 us; (100, 256) took 3.6 us on one and 5.1 us on two. The project's general
# threshold (``tinylm.kernels.set_parallel_threshold``, 2**16 elements) is for
# elementwise kernels; the lower of the two applies (0 in the tests makes every product
# parallel).
PARALLEL_MIN_WEIGHTS = 1 << 17

# M > 1: bytes of dequantized float32 weights per block (about half a core's L2).
DEQUANTIZED_BLOCK_BYTES = 1 << 18


def instruction_set():
    """The vector code this build's dot products use: "avx512", "avx2" or "portable"."""
    return tinylm_int8_isa().decode()


def threads_for_weights(Py_ssize_t weights):
    """How many threads a product over ``weights`` int8 weights uses."""
    return get_num_threads() if weights >= min(PARALLEL_MIN_WEIGHTS, get_parallel_threshold()) else 1


def check_int8_weight(op, name, weight, shape):
    """``weight`` as a C-contiguous int8 NumPy array of ``shape`` (a TypeError or ValueError
    naming ``op`` otherwise). Shared with ``lstm.pyx``."""
    weight = as_array(op, name, weight, np)
    if weight.dtype != np.int8:
        raise TypeError(f"{op}: {name} must be int8, got {weight.dtype}")
    if weight.shape != shape:
        raise ValueError(f"{op}: {name} {weight.shape} must be {shape}")
    return np.ascontiguousarray(weight)


def check_scale(op, name, scale, shape):
    """``scale`` as a C-contiguous float32 NumPy array of ``shape``. Shared with ``lstm.pyx``."""
    scale = as_array(op, name, scale, np)
    if scale.dtype != np.float32:
        raise TypeError(f"{op}: {name} must be float32, got {scale.dtype}")
    if scale.shape != shape:
        raise ValueError(f"{op}: {name} {scale.shape} must be {shape}")
    return np.ascontiguousarray(scale)


@cython.boundscheck(False)
@cython.wraparound(False)
def _rows_by_matvec(const float[:, ::1] x, const int8_t[:, ::1] weight, const float[::1] scale, float[:, ::1] out,
                    int threads):
    """out[m] = s · (q x[m]) for each row m of x: one matrix-vector product per row."""
    cdef Py_ssize_t m
    with nogil:
        for m in range(x.shape[0]):
            tinylm_int8_matvec(&x[m, 0], &weight[0, 0], weight.shape[1], &scale[0], &out[m, 0],
                               weight.shape[0], weight.shape[1], 0, threads)


@cython.boundscheck(False)
@cython.wraparound(False)
def _rows_by_sgemm(const float[:, ::1] x, const int8_t[:, ::1] weight, const float[::1] scale, float[:, ::1] out,
                   float[:, ::1] block):
    """out = x @ (s · q)ᵀ, ``block.shape[0]`` weight rows at a time: dequantize them into
    ``block``, then one sgemm, x (M, K) @ blockᵀ, into those columns of out (row length N)."""
    cdef Py_ssize_t rows = weight.shape[0], cols = weight.shape[1], per_block = block.shape[0], start = 0, count
    with nogil:
        while start < rows:
            count = min(per_block, rows - start)
            tinylm_int8_dequantize(&weight[start, 0], cols, &scale[start], &block[0, 0], count, cols)
            _gemm(False, True, x.shape[0], count, cols, &x[0, 0], cols, &block[0, 0], cols, &out[0, start], rows)
            start += count


def int8_matmul(x, weight, scale):
    """x (M, K) float32 or float64, weight (N, K) int8, scale (N,) float32 -> (M, N) in x's
    dtype: x @ (scale[:, None] · weight)ᵀ (see the module docstring)."""
    op = "int8_matmul"
    x = as_array(op, "x", x, np)
    dtype = float_dtype(op, "x", x)
    if x.ndim != 2:
        raise ValueError(f"{op}: x {x.shape} must be 2-D (M, K)")
    weight = as_array(op, "weight", weight, np)
    if weight.ndim != 2:
        raise ValueError(f"{op}: weight {weight.shape} must be 2-D (N, K)")
    batch, cols, rows = x.shape[0], x.shape[1], weight.shape[0]
    if weight.shape[1] != cols:
        raise ValueError(f"{op}: weight {weight.shape} must be (N, K) with K = {cols} from x {x.shape}")
    weight = check_int8_weight(op, "weight", weight, (rows, cols))
    scale = check_scale(op, "scale", scale, (rows,))
    if dtype != np.float32:
        from tinylm.reference.int8_matmul import int8_matmul as reference

        return reference(x, weight, scale)
    x = np.ascontiguousarray(x)
    out = np.empty((batch, rows), np.float32)
    if batch == 0 or rows == 0:
        return out
    if cols == 0:
        out[...] = 0  # an empty sum
        return out
    if batch == 1 or not _blas_ready(max(batch, rows, cols)):
        _rows_by_matvec(x, weight, scale, out, threads_for_weights(rows * cols))
    else:
        per_block = min(rows, max(4, DEQUANTIZED_BLOCK_BYTES // (4 * cols)))
        _rows_by_sgemm(x, weight, scale, out, np.empty((per_block, cols), np.float32))
    return out
