# cython: language_level=3
"""Matrix products: the drop-ins for ``tinylm/reference/gemm.py``, whose docstring has the
meaning of every argument. Two engines, one meaning:

``gemm(a, b, ...)``, a product done once (a Linear layer's forward and both of its
backward products), runs on the kernels' OpenMP team: the output is cut into one block
of rows per thread (of columns when it has fewer rows than columns), and each thread
multiplies its block with the single-threaded ``cblas_sgemm``/``cblas_dgemm`` of the
OpenBLAS NumPy itself uses (``_blas.pxi``, ``blas.py``), reading a, b and their
transposes in place through their strides. OpenBLAS reaches about the peak of one core
on the transformer's products (~100 GFLOP/s for (2048, 128)·(128, 384) on this Zen 4)
but does not split them well over two cores itself, and its own pthreads spin against
the OpenMP team of the other kernels; the cython backend therefore holds NumPy's BLAS at
one thread (``tinylm/backends.py``) and this team is the one pool that runs parallel work.
Each output element is computed whole by one thread (no partial sums cross threads), but
its last bits may change with the thread count: OpenBLAS's edge kernels differ with the
shape of the block it is given. Where NumPy's BLAS is not found, ``gemm`` calls
``np.matmul``, with the same meaning (and, the BLAS being held at one thread, on one thread).

``gemm_packed(a, pack_weight(w))``, a weight multiplied many times (the LSTM's W_hh at
every step), runs tinylm's own packed micro-kernel (``tinylm_gemm.h``): the weight is laid
out once into panels, and each product reuses the layout:

    packed = pack_weight(w_hh, transpose=True)    # B = W_hhᵀ (H, 4H), packed once
    for t in range(T):
        gemm_packed(h, packed, out=gates[t])      # gates_t = h · W_hhᵀ, no packing per step

float32 runs the micro-kernel (AVX-512, AVX2+FMA or portable C, fixed when the package was
built: see ``kernel_info()``); float64 falls back to NumPy's matmul, with the same meaning.

Every check is here, before the C code runs: dtypes, dimensions, the inner sizes, the
output's shape, dtype, strides and writability. A strided or transposed operand is read in
place through its strides; only one that BLAS or the micro-kernel cannot describe (neither
axis of unit stride for BLAS, a stride that is not a whole number of elements, an unaligned
view of a structured array) is copied, and so is an operand that overlaps ``out``.
"""

import numpy as np

from libc.stdint cimport int64_t, uintptr_t

cimport cython
from cython.parallel cimport prange

include "_math.pxi"
include "_blas.pxi"

from tinylm.kernels.checks import flag, float_array, int_scalar
from tinylm.reference.gemm import check_bias

cdef extern from "tinylm_gemm.h" nogil:
    const char* TINYLM_GEMM_ISA
    int TINYLM_GEMM_MR
    int TINYLM_GEMM_NR
    int TINYLM_GEMM_KC
    int TINYLM_GEMM_MC
    int64_t tinylm_gemm_packed_size(int64_t k, int64_t n)
    void tinylm_gemm_pack_b(int64_t k, int64_t n, const float* b, int64_t rsb, int64_t csb, float* packed)
    int tinylm_sgemm_packed(int64_t m, int64_t n, int64_t k, const float* a, int64_t rsa, int64_t csa,
                            const float* packed_b, float* c, int64_t ldc, int accumulate, int threads)
    float tinylm_gemm_fma_probe(int64_t iterations)

# Below this many multiply-adds per thread a product stays on fewer threads: waking an
# OpenMP thread costs a few microseconds, what 2^17 multiply-adds take at 60 GFLOP/s.
MIN_WORK_PER_THREAD = 1 << 17
ALIGN = 64  # bytes: the packed panels start on a cache line, and so do the team's blocks


def kernel_info():
    """The micro-kernel this build runs: instruction set, tile MR x NR, blocks KC and MC."""
    return {"isa": TINYLM_GEMM_ISA.decode(), "mr": TINYLM_GEMM_MR, "nr": TINYLM_GEMM_NR,
            "kc": TINYLM_GEMM_KC, "mc": TINYLM_GEMM_MC}


def fma_probe(iterations):
    """Run the micro-kernel's FMAs without its loads (``tinylm_gemm_fma_probe``) on this
    thread; returns (floating-point operations done, the sum of the accumulators, which
    keeps the compiler from dropping the loop). Time it for one core's peak."""
    cdef int64_t n = int_scalar("fma_probe", "iterations", iterations, 0, 2**62)
    cdef float checksum
    with nogil:
        checksum = tinylm_gemm_fma_probe(n)
    return 2.0 * TINYLM_GEMM_MR * TINYLM_GEMM_NR * n, checksum


cdef class PackedWeight:
    """B (K, N) laid out for the micro-kernel: ceil(N / NR) column panels of K x NR floats
    (float32), or B itself for float64. A copy: pack again after the weight changes."""

    cdef readonly object data   # float32: the panels, 1-D and 64-byte aligned; float64: B (K, N)
    cdef readonly Py_ssize_t k
    cdef readonly Py_ssize_t n
    cdef readonly object dtype

    @property
    def shape(self):
        """(K, N): the B this packs, after any transpose."""
        return (self.k, self.n)

    def unpack(self):
        """B (K, N) back from the panels (for tests and for reading the layout)."""
        if self.dtype == np.float64:
            return self.data.copy()
        if self.k == 0 or self.n == 0:
            return np.zeros((self.k, self.n), np.float32)
        nr = TINYLM_GEMM_NR
        panels = self.data.reshape(-1, self.k, nr)           # (N / NR, K, NR)
        return np.ascontiguousarray(panels.transpose(1, 0, 2).reshape(self.k, -1)[:, :self.n])

    def __repr__(self):
        return f"PackedWeight(shape={self.shape}, dtype={self.dtype.name})"


def _aligned_empty(Py_ssize_t count):
    """A 1-D float32 array of ``count`` floats whose first element is 64-byte aligned."""
    raw = np.empty(count + ALIGN // 4, np.float32)
    offset = (-raw.ctypes.data % ALIGN) // 4
    return raw[offset:offset + count]


def _matrix(op, name, value):
    array = float_array(op, name, value)
    if array.ndim != 2:
        raise ValueError(f"{op}: {name} must be a 2-D matrix, got shape {array.shape}")
    return array


def _float_strides(array):
    """The array as one whose strides are whole floats (a copy only if they are not), and
    those strides in floats."""
    if any(s % 4 for s in array.strides):
        array = np.ascontiguousarray(array)
    return array, array.strides[0] // 4, array.strides[1] // 4


def pack_weight(w, transpose=False):
    """w (K, N), or (N, K) with ``transpose`` -> PackedWeight of B = w or wᵀ (K, N)."""
    w = _matrix("pack_weight", "w", w)
    transpose = flag("pack_weight", "transpose", transpose)
    b = w.T if transpose else w
    cdef PackedWeight packed = PackedWeight.__new__(PackedWeight)
    packed.k, packed.n, packed.dtype = b.shape[0], b.shape[1], b.dtype
    if b.dtype == np.float64:
        packed.data = np.array(b, order="C")
        return packed
    b, rsb, csb = _float_strides(b)
    data = _aligned_empty(tinylm_gemm_packed_size(packed.k, packed.n))
    cdef const float[:, :] source = b
    cdef float[::1] target = data
    cdef int64_t k = packed.k, n = packed.n, rs = rsb, cs = csb
    if k and n:
        with nogil:
            tinylm_gemm_pack_b(k, n, &source[0, 0], rs, cs, &target[0])
    packed.data = data
    return packed


def _threads(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k):
    """The team for an (m, k) @ (k, n) product. One thread, so one OpenBLAS call on BLAS's own
    threads, while NumPy's BLAS runs on more than one (the kernels called directly, with no
    cython backend current to hold it at one: tinylm/backends.py): a team whose every thread
    called a multi-threaded OpenBLAS would have two pools fight over the cores."""
    from tinylm import kernels

    if not _blas.team_may_call_blas():
        return 1
    available = kernels.get_num_threads()
    if kernels.get_parallel_threshold() == 0:  # every kernel parallel (tests, or by choice)
        return available
    return int(max(1, min(available, m * n * k // MIN_WORK_PER_THREAD)))


def _output(op, out, accumulate, Py_ssize_t m, Py_ssize_t n, dtype):
    if out is None:
        if accumulate:
            raise ValueError(f"{op}: accumulate=True adds to out, so out must be given")
        return np.empty((m, n), dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{op}: out must be a NumPy array, got {type(out).__name__}")
    if out.shape != (m, n) or out.dtype != dtype:
        raise ValueError(f"{op}: out must be ({m}, {n}) {dtype}, got {out.shape} {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{op}: out is read-only")
    if m and n and (out.strides[1] != out.itemsize or (m > 1 and out.strides[0] < n * out.itemsize)
                    or out.strides[0] % out.itemsize):
        raise ValueError(f"{op}: out must have contiguous rows that do not overlap, got strides {out.strides}")
    return out


def _product(op, a, PackedWeight packed, out, accumulate, transpose_a):
    accumulate = flag(op, "accumulate", accumulate)
    transpose_a = flag(op, "transpose_a", transpose_a)
    a_op = a.T if transpose_a else a  # (M, K)
    if a_op.shape[1] != packed.k:
        raise ValueError(f"{op}: {a_op.shape} @ {packed.shape}: inner sizes differ")
    if a.dtype != packed.dtype:
        raise TypeError(f"{op}: a is {a.dtype} but the weight is {packed.dtype}")
    cdef Py_ssize_t m = a_op.shape[0], n = packed.n, k = packed.k
    out = _output(op, out, accumulate, m, n, a.dtype)
    if a.dtype == np.float64:  # the fallback: NumPy's matmul, the same meaning
        if accumulate:
            out += a_op @ packed.data
        else:
            np.matmul(a_op, packed.data, out=out)
        return out
    if m == 0 or n == 0:
        return out
    if np.may_share_memory(a_op, out):
        a_op = a_op.copy()
    a_op, rsa, csa = _float_strides(a_op)
    cdef const float[:, :] a_view = a_op
    cdef float[::1] b_view = packed.data
    cdef float[:, :] c_view = out
    cdef const float* a_ptr = &a_view[0, 0] if k else NULL
    cdef const float* b_ptr = &b_view[0] if k else NULL
    cdef int64_t rs = rsa, cs = csa, ldc = out.strides[0] // 4
    cdef int add = accumulate, threads = _threads(m, n, k), status
    with nogil:
        status = tinylm_sgemm_packed(m, n, k, a_ptr, rs, cs, b_ptr, &c_view[0, 0], ldc, add, threads)
    if status:
        raise MemoryError(f"{op}: could not allocate the packing buffer of A")
    return out


def gemm_packed(a, packed, out=None, accumulate=False, transpose_a=False):
    """op(a) (M, K) @ B (K, N) -> (M, N), B packed by ``pack_weight``; into ``out`` when
    given, added to it with ``accumulate``. op(a) = aᵀ with ``transpose_a`` (a stored (K, M))."""
    a = _matrix("gemm_packed", "a", a)
    if not isinstance(packed, PackedWeight):
        raise TypeError(f"gemm_packed: packed must be a PackedWeight from pack_weight, got {type(packed).__name__}")
    return _product("gemm_packed", a, packed, out, accumulate, transpose_a)


def gemm(a, b, out=None, accumulate=False, transpose_a=False, transpose_b=False, bias=None):
    """op(a) (M, K) @ op(b) (K, N) (+ bias (N,) on every row) -> (M, N), op(x) = xᵀ when
    transpose_x; into ``out`` when given, added to it with ``accumulate``. On the OpenMP
    team through NumPy's BLAS (see the module docstring), each thread adding the bias to
    its block right after its product, while the block is in cache; for a weight
    multiplied many times, ``pack_weight`` it once and call ``gemm_packed``, the micro-kernel."""
    a = _matrix("gemm", "a", a)
    b = _matrix("gemm", "b", b)
    if a.dtype != b.dtype:
        raise TypeError(f"gemm: a is {a.dtype} but b is {b.dtype}")
    transpose_a = flag("gemm", "transpose_a", transpose_a)
    transpose_b = flag("gemm", "transpose_b", transpose_b)
    accumulate = flag("gemm", "accumulate", accumulate)
    a_op = a.T if transpose_a else a  # (M, K)
    b_op = b.T if transpose_b else b  # (K, N)
    if a_op.shape[1] != b_op.shape[0]:
        raise ValueError(f"gemm: {a_op.shape} @ {b_op.shape}: inner sizes differ")
    cdef Py_ssize_t m = a_op.shape[0], k = a_op.shape[1], n = b_op.shape[1]
    if bias is not None:
        bias = float_array("gemm", "bias", bias)
        if bias.dtype != a.dtype:
            raise TypeError(f"gemm: a is {a.dtype} but bias is {bias.dtype}")
        check_bias("gemm", bias, n)
        bias = np.ascontiguousarray(bias)
    out = _output("gemm", out, accumulate, m, n, a.dtype)
    if m == 0 or n == 0:
        return out
    if k == 0:  # a sum of no terms
        if not accumulate:
            out.fill(0)
        if bias is not None:
            out += bias
        return out
    if np.may_share_memory(a, out):
        a_op = a_op.copy()
    if np.may_share_memory(b, out):
        b_op = b_op.copy()
    if bias is not None and np.may_share_memory(bias, out):
        bias = bias.copy()
    a_stored, flip_a, lda = _blas_operand(a_op)
    b_stored, flip_b, ldb = _blas_operand(b_op)
    ldc = out.strides[0] // out.itemsize if m > 1 else n
    if not out.flags.aligned or not _blas_ready(max(m, n, k, lda, ldb, ldc)):
        if accumulate:
            out += a_op @ b_op
        else:
            np.matmul(a_op, b_op, out=out)
        if bias is not None:
            out += bias
        return out
    _team_product(a_stored, flip_a, lda, b_stored, flip_b, ldb, out, ldc, m, n, k, accumulate, bias)
    return out


def _blas_operand(x):
    """The matrix x (R, C) as CBLAS reads it: (stored, transposed, ld), where x = stored, or
    storedᵀ when ``transposed``, and ``stored`` is row-major with rows ``ld`` elements apart.
    A view of x where one of its axes has unit stride (a transpose or a slice is read in
    place); a copy otherwise."""
    rows, cols = x.shape
    item = x.itemsize
    s0, s1 = x.strides
    if x.flags.aligned:
        if (cols == 1 or s1 == item) and (rows == 1 or (s0 % item == 0 and s0 >= cols * item)):
            return x, False, (s0 // item if rows > 1 else cols)
        if (rows == 1 or s0 == item) and (cols == 1 or (s1 % item == 0 and s1 >= rows * item)):
            return x.T, True, (s1 // item if cols > 1 else rows)
    return np.ascontiguousarray(x), False, cols


def _team_product(a, bint flip_a, Py_ssize_t lda, b, bint flip_b, Py_ssize_t ldb, out, Py_ssize_t ldc,
                  Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint accumulate, bias):
    """Cut the output into blocks, one per thread, and run the team (sizes already checked)."""
    cdef bint split_rows = m >= n  # each thread packs all of the other operand: the smaller one
    cdef Py_ssize_t cut = m if split_rows else n
    cdef Py_ssize_t grain = max(1, ALIGN // out.itemsize)  # a block starts on a cache line
    cdef Py_ssize_t threads = min(_threads(m, n, k), (cut + grain - 1) // grain)
    cdef Py_ssize_t per_thread = (cut + threads - 1) // threads
    cdef Py_ssize_t block = (per_thread + grain - 1) // grain * grain
    cdef Py_ssize_t blocks = (cut + block - 1) // block  # <= threads
    if out.dtype == np.float32:
        _team_sgemm(a, flip_a, lda, b, flip_b, ldb, out, ldc, m, n, k, accumulate, bias, split_rows, block, blocks)
    else:
        _team_dgemm(a, flip_a, lda, b, flip_b, ldb, out, ldc, m, n, k, accumulate, bias, split_rows, block, blocks)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _add_bias(real* c, Py_ssize_t ldc, Py_ssize_t rows, Py_ssize_t cols, const real* bias) noexcept nogil:
    """c[i, j] += bias[j] over a (rows, cols) block of c."""
    cdef Py_ssize_t i, j
    cdef real* row
    for i in range(rows):
        row = c + i * ldc
        for j in range(cols):
            row[j] = row[j] + bias[j]


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _block(bint flip_a, bint flip_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                 const real* a, Py_ssize_t lda, const real* b, Py_ssize_t ldb, real beta, real* c, Py_ssize_t ldc,
                 const real* bias) noexcept nogil:
    """One thread's block: C = op(A) op(B) + beta C, then the bias (NULL: none) on its rows."""
    _gemm_beta(flip_a, flip_b, m, n, k, a, lda, b, ldb, beta, c, ldc)
    if bias != NULL:
        _add_bias(c, ldc, m, n, bias)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _blocks(bint flip_a, bint flip_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                  const real* a, Py_ssize_t lda, const real* b, Py_ssize_t ldb, real beta, real* c, Py_ssize_t ldc,
                  const real* bias, bint split_rows, Py_ssize_t block, Py_ssize_t blocks) noexcept nogil:
    """C = op(A) op(B) + beta C (+ bias), block i of rows (or columns) [i block, (i + 1) block)
    on thread i. A block of rows of C takes the same rows of op(A): a row offset in A, or a
    column offset when A is stored transposed; a block of columns takes the same columns of
    op(B) likewise, and of the bias."""
    cdef Py_ssize_t i, start, size
    if blocks == 1:
        _block(flip_a, flip_b, m, n, k, a, lda, b, ldb, beta, c, ldc, bias)
        return
    for i in prange(blocks, num_threads=blocks, schedule="static"):
        start = i * block
        if split_rows:
            size = min(block, m - start)
            _block(flip_a, flip_b, size, n, k, a + (start if flip_a else start * lda), lda, b, ldb, beta,
                   c + start * ldc, ldc, bias)
        else:
            size = min(block, n - start)
            _block(flip_a, flip_b, m, size, k, a, lda, b + (start * ldb if flip_b else start), ldb, beta,
                   c + start, ldc, NULL if bias == NULL else bias + start)


def _team_sgemm(a, bint flip_a, Py_ssize_t lda, b, bint flip_b, Py_ssize_t ldb, out, Py_ssize_t ldc,
                Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint accumulate, bias, bint split_rows, Py_ssize_t block,
                Py_ssize_t blocks):
    cdef const float[:, :] a_view = a
    cdef const float[:, :] b_view = b
    cdef float[:, :] c_view = out
    cdef const float[::1] bias_view
    cdef const float* bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        bias_ptr = &bias_view[0]
    cdef const float* a_ptr = &a_view[0, 0]
    cdef const float* b_ptr = &b_view[0, 0]
    cdef float* c_ptr = &c_view[0, 0]
    cdef float beta = 1 if accumulate else 0
    with nogil:
        _blocks(flip_a, flip_b, m, n, k, a_ptr, lda, b_ptr, ldb, beta, c_ptr, ldc, bias_ptr, split_rows, block, blocks)


def _team_dgemm(a, bint flip_a, Py_ssize_t lda, b, bint flip_b, Py_ssize_t ldb, out, Py_ssize_t ldc,
                Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint accumulate, bias, bint split_rows, Py_ssize_t block,
                Py_ssize_t blocks):
    cdef const double[:, :] a_view = a
    cdef const double[:, :] b_view = b
    cdef double[:, :] c_view = out
    cdef const double[::1] bias_view
    cdef const double* bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        bias_ptr = &bias_view[0]
    cdef const double* a_ptr = &a_view[0, 0]
    cdef const double* b_ptr = &b_view[0, 0]
    cdef double* c_ptr = &c_view[0, 0]
    cdef double beta = 1 if accumulate else 0
    with nogil:
        _blocks(flip_a, flip_b, m, n, k, a_ptr, lda, b_ptr, ldb, beta, c_ptr, ldc, bias_ptr, split_rows, block, blocks)
