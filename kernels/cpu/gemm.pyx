# cython: language_level=3
"""A packed single-precision matrix product (``tinylm_gemm.h``): the drop-ins for
``tinylm/reference/gemm.py``, whose docstring has the meaning of every argument.

    packed = pack_weight(w_hh, transpose=True)    # B = W_hhᵀ (H, 4H), packed once
    for t in range(T):
        gemm_packed(h, packed, out=gates[t])      # gates_t = h · W_hhᵀ, no packing per step

``gemm(a, b, ...)`` packs b and multiplies, for a product done once. float32 runs the
micro-kernel (AVX-512, AVX2+FMA or portable C, fixed when the package was built: see
``kernel_info()``); float64 falls back to NumPy's matmul, with the same meaning.

Every check is here, before the C code runs: dtypes, dimensions, the inner sizes, the
output's shape, dtype, strides and writability. A strided or transposed ``a`` is read in
place through its strides; only a stride that is not a whole number of floats (a view of
a structured array) makes a copy, and so does an ``a`` that overlaps ``out``.
"""

import numpy as np

from libc.stdint cimport int64_t, uintptr_t

from tinylm.kernels.checks import flag, float_array, int_scalar

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
ALIGN = 64  # bytes: the packed panels start on a cache line


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
    from tinylm import kernels

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


def gemm(a, b, out=None, accumulate=False, transpose_a=False, transpose_b=False):
    """op(a) (M, K) @ op(b) (K, N) -> (M, N), op(x) = xᵀ when transpose_x; into ``out`` when
    given, added to it with ``accumulate``. Packs b on every call: for a weight used many
    times, ``pack_weight`` once and ``gemm_packed``."""
    a = _matrix("gemm", "a", a)
    b = _matrix("gemm", "b", b)
    if a.dtype != b.dtype:
        raise TypeError(f"gemm: a is {a.dtype} but b is {b.dtype}")
    transpose_b = flag("gemm", "transpose_b", transpose_b)
    a_cols = a.shape[0] if flag("gemm", "transpose_a", transpose_a) else a.shape[1]
    b_rows = b.shape[1] if transpose_b else b.shape[0]
    if a_cols != b_rows:
        a_shape = a.shape[::-1] if transpose_a else a.shape
        b_shape = b.shape[::-1] if transpose_b else b.shape
        raise ValueError(f"gemm: {a_shape} @ {b_shape}: inner sizes differ")
    return _product("gemm", a, pack_weight(b, transpose_b), out, accumulate, transpose_a)
