# Shared by the Cython kernels that multiply matrices inside a nogil loop
# (``include "_blas.pxi"`` after ``_math.pxi``): the CBLAS gemm and gemv of the OpenBLAS
# NumPy itself uses, found at run time by ``blas.py``. Each including module holds its
# own pointers; ``_blas_ready`` sets them before a C loop runs, and returns False where
# NumPy's BLAS is not found (the caller then takes its NumPy path).

from libc.stdint cimport int64_t, uintptr_t

from tinylm.kernels.cpu import blas as _blas


# CBLAS's signatures, with 32-bit or 64-bit integers (NumPy's wheels: 64-bit).
ctypedef void (*sgemm64_t)(int, int, int, int64_t, int64_t, int64_t, float, const float*, int64_t,
                           const float*, int64_t, float, float*, int64_t) noexcept nogil
ctypedef void (*sgemm32_t)(int, int, int, int, int, int, float, const float*, int,
                           const float*, int, float, float*, int) noexcept nogil
ctypedef void (*dgemm64_t)(int, int, int, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t) noexcept nogil
ctypedef void (*dgemm32_t)(int, int, int, int, int, int, double, const double*, int,
                           const double*, int, double, double*, int) noexcept nogil
ctypedef void (*sgemv64_t)(int, int, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                           float, float*, int64_t) noexcept nogil
ctypedef void (*sgemv32_t)(int, int, int, int, float, const float*, int, const float*, int,
                           float, float*, int) noexcept nogil
ctypedef void (*dgemv64_t)(int, int, int64_t, int64_t, double, const double*, int64_t, const double*, int64_t,
                           double, double*, int64_t) noexcept nogil
ctypedef void (*dgemv32_t)(int, int, int, int, double, const double*, int, const double*, int,
                           double, double*, int) noexcept nogil

cdef enum:
    ROW_MAJOR = 101  # CblasRowMajor
    NO_TRANS = 111   # CblasNoTrans
    TRANS = 112      # CblasTrans

cdef void* _sgemm = NULL
cdef void* _dgemm = NULL
cdef void* _sgemv = NULL
cdef void* _dgemv = NULL
cdef bint _blas_int64 = False


def _blas_ready(Py_ssize_t largest_dimension):
    """Point the C loops at NumPy's gemm; False (use the Python loop) where it is not found
    or a dimension would not fit its integers."""
    global _sgemm, _dgemm, _sgemv, _dgemv, _blas_int64
    found = _blas.numpy_cblas()
    if found is None or (not found.int64 and largest_dimension >= 2 ** 31):
        return False
    _sgemm, _dgemm = <void*><uintptr_t>found.sgemm, <void*><uintptr_t>found.dgemm
    _sgemv, _dgemv = <void*><uintptr_t>found.sgemv, <void*><uintptr_t>found.dgemv
    _blas_int64 = found.int64
    return True


cdef inline void _gemm(bint transpose_a, bint transpose_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       const real* a, Py_ssize_t lda, const real* b, Py_ssize_t ldb, real* c,
                       Py_ssize_t ldc) noexcept nogil:
    """c (m, n) = op(a) @ op(b), row-major, where op(a) is a (m, k), or aᵀ with a stored
    (k, m) when ``transpose_a``, and op(b) is b (k, n), or bᵀ with b stored (n, k); lda,
    ldb, ldc are the row lengths in memory. One row of a (batch 1) goes to gemv, as in
    NumPy: c = op(b)ᵀ a, a single matrix-vector product."""
    _gemm_beta(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, 0, c, ldc)


cdef inline void _gemm_beta(bint transpose_a, bint transpose_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                            const real* a, Py_ssize_t lda, const real* b, Py_ssize_t ldb, real beta, real* c,
                            Py_ssize_t ldc) noexcept nogil:
    """``_gemm``, but c = op(a) @ op(b) + beta c: beta 1 adds the product to c, beta 0
    overwrites c without reading it."""
    if m == 1 and not transpose_a:
        # gemv's matrix is b: (n, k) for c = b a, (k, n) for c = bᵀ a
        _gemv_beta(not transpose_b, n if transpose_b else k, k if transpose_b else n, b, ldb, a, beta, c)
        return
    cdef int op_a = TRANS if transpose_a else NO_TRANS
    cdef int op_b = TRANS if transpose_b else NO_TRANS
    if real is float:
        if _blas_int64:
            (<sgemm64_t>_sgemm)(ROW_MAJOR, op_a, op_b, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
        else:
            (<sgemm32_t>_sgemm)(ROW_MAJOR, op_a, op_b, <int>m, <int>n, <int>k, 1, a, <int>lda, b, <int>ldb,
                                beta, c, <int>ldc)
    else:
        if _blas_int64:
            (<dgemm64_t>_dgemm)(ROW_MAJOR, op_a, op_b, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
        else:
            (<dgemm32_t>_dgemm)(ROW_MAJOR, op_a, op_b, <int>m, <int>n, <int>k, 1, a, <int>lda, b, <int>ldb,
                                beta, c, <int>ldc)


cdef inline void _gemv(bint transpose, Py_ssize_t rows, Py_ssize_t cols, const real* matrix, Py_ssize_t ld,
                       const real* x, real* y) noexcept nogil:
    """y = matrix x, or matrixᵀ x when ``transpose``; matrix (rows, cols) row-major."""
    _gemv_beta(transpose, rows, cols, matrix, ld, x, 0, y)


cdef inline void _gemv_beta(bint transpose, Py_ssize_t rows, Py_ssize_t cols, const real* matrix, Py_ssize_t ld,
                            const real* x, real beta, real* y) noexcept nogil:
    """y = matrix x + beta y, or matrixᵀ x + beta y when ``transpose``."""
    cdef int op = TRANS if transpose else NO_TRANS
    if real is float:
        if _blas_int64:
            (<sgemv64_t>_sgemv)(ROW_MAJOR, op, rows, cols, 1, matrix, ld, x, 1, beta, y, 1)
        else:
            (<sgemv32_t>_sgemv)(ROW_MAJOR, op, <int>rows, <int>cols, 1, matrix, <int>ld, x, 1, beta, y, 1)
    else:
        if _blas_int64:
            (<dgemv64_t>_dgemv)(ROW_MAJOR, op, rows, cols, 1, matrix, ld, x, 1, beta, y, 1)
        else:
            (<dgemv32_t>_dgemv)(ROW_MAJOR, op, <int>rows, <int>cols, 1, matrix, <int>ld, x, 1, beta, y, 1)
