# cython: language_level=3
"""Causal scaled dot-product attention as Cython kernels: the drop-ins for
``tinylm/reference/causal_attention.py`` (whose docstring derives the backward).

Same names, signatures and meaning: q, k, v (N, T, hs) -> (out, logsumexp), and the
backward rebuilds the probabilities from logsumexp instead of keeping the (N, T, T)
matrix. What differs, and why:

- One head at a time in C, without the GIL: q kᵀ, then the scale, the causal mask and
  the softmax of each row in place, then p v. The reference does the same per head with
  NumPy's batched matmul and about eight (N, T, T) temporaries (the mask, exp, the
  products); here a head's (T, T) scores stay in one scratch buffer that fits in L2.
- float32 products run on the packed micro-kernel (``tinylm_attention.h``), which skips
  the tiles the causal mask makes zero (about half of each product); a head's products
  are too small for a BLAS call to pay its entry and packing. float64 products go through
  the cblas gemm NumPy itself uses (``_blas.pxi``), whole.
- The softmax is two passes over a row (max, then exp and sum; a third scales by
  1/sum), not one online pass: the row is in cache already, and the online form's
  rescaling cost more than the pass it saves (see ``attention_softmax.pyx``). Sums in double.
- The backward scales dL/ds before its two products (scale (dL/ds) k), where the
  reference scales after; the results agree to rounding.
- The heads are shared out over the kernels' OpenMP team (``threads_for``), each thread
  with its own (T, T) scratch and packing buffers; a head's small products run on the
  calling thread. Each head is one thread's, so the results do not depend on the thread count.
- Where NumPy's BLAS is not found (see ``blas.py``), the reference serves float64.
"""

import numpy as np

cimport cython

include "_math.pxi"
include "_blas.pxi"

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t

cdef extern from "tinylm_attention.h" nogil:
    int TINYLM_GEMM_MR
    int TINYLM_GEMM_NR
    int64_t tinylm_attention_packed_a_floats(int64_t steps, int64_t size)
    int64_t tinylm_attention_packed_b_floats(int64_t steps, int64_t size)
    void tinylm_attention_softmax_rows(int64_t steps, float* s, float scale, float* lse)
    void tinylm_attention_probs_rows(int64_t steps, float* s, float scale, const float* lse)
    void tinylm_attention_dscores_rows(int64_t steps, int64_t size, const float* p, float* ds, const float* g,
                                       const float* out, float scale)
    void tinylm_attention_scores(int64_t steps, int64_t size, const float* x, const float* y, float* s,
                                 float* packed_a, float* packed_b, float* tile)
    void tinylm_attention_causal_product(int64_t steps, int64_t n, const float* a, int64_t rsa, int64_t csa,
                                         int transposed, const float* b, int64_t ldb, float* out, int64_t ldo,
                                         float* packed_a, float* packed_b, float* tile)

from tinylm.kernels import threads_for
from tinylm.kernels.checks import float_dtype, real_scalar
from tinylm.reference import causal_attention as reference


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline void _softmax_rows(real* scores, Py_ssize_t steps, real scale, real* logsumexp) noexcept nogil:
    """scores (T, T) -> causal softmax in place: row i keeps keys j <= i, the rest 0."""
    cdef Py_ssize_t i, j, lane, seen, whole
    cdef real row_max, value, inverse
    cdef double total
    cdef double lanes[8]  # the row sum in 8 interleaved partial sums, which GCC vectorises
    cdef real* row
    for i in range(steps):
        row = scores + i * steps
        seen = i + 1  # keys j <= i
        row_max = row[0] * scale
        for j in range(1, seen):
            value = row[j] * scale
            if value > row_max or value != value:  # a NaN score makes the row NaN, as NumPy's max does
                row_max = value
        for j in range(seen):
            row[j] = _exp(row[j] * scale - row_max)
        for lane in range(8):
            lanes[lane] = 0
        whole = seen - seen % 8
        for j in range(0, whole, 8):
            for lane in range(8):
                lanes[lane] += row[j + lane]
        for j in range(whole, seen):
            lanes[0] += row[j]
        total = 0
        for lane in range(8):
            total += lanes[lane]
        inverse = <real>(1 / total)
        for j in range(seen):
            row[j] = row[j] * inverse
        for j in range(seen, steps):
            row[j] = 0
        logsumexp[i] = <real>(row_max + _log(<real>total))


@cython.boundscheck(False)
@cython.wraparound(False)
def _forward(const real[:, :, ::1] q, const real[:, :, ::1] k, const real[:, :, ::1] v, real scale,
                   real[:, :, ::1] scores, real[:, :, ::1] out, real[:, ::1] logsumexp, real[:, ::1] packed_a,
                   real[:, ::1] packed_b, real[:, ::1] tile, int threads):
    """Each head on one thread of the team, in the (T, T) scratch (and, float32, the
    packing buffers) of that thread."""
    cdef Py_ssize_t heads = q.shape[0], steps = q.shape[1], size = q.shape[2], n
    cdef real* s
    cdef int t
    for n in prange(heads, schedule="static", num_threads=threads, nogil=True):
        t = threadid()
        s = &scores[t, 0, 0]
        if real is float:
            tinylm_attention_scores(steps, size, &q[n, 0, 0], &k[n, 0, 0], s, &packed_a[t, 0], &packed_b[t, 0],
                                    &tile[t, 0])
        else:
            _gemm(False, True, steps, steps, size, &q[n, 0, 0], size, &k[n, 0, 0], size, s, steps)
        if real is float:
            tinylm_attention_softmax_rows(steps, s, scale, &logsumexp[n, 0])
        else:
            _softmax_rows(s, steps, scale, &logsumexp[n, 0])
        if real is float:
            tinylm_attention_causal_product(steps, size, s, steps, 1, False, &v[n, 0, 0], size, &out[n, 0, 0], size,
                                            &packed_a[t, 0], &packed_b[t, 0], &tile[t, 0])
        else:
            _gemm(False, False, steps, size, steps, s, steps, &v[n, 0, 0], size, &out[n, 0, 0], size)


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward(const real[:, :, ::1] grad_out, const real[:, :, ::1] q, const real[:, :, ::1] k,
                    const real[:, :, ::1] v, const real[:, :, ::1] out, const real[:, ::1] logsumexp, real scale,
                    real[:, :, ::1] probs, real[:, :, ::1] grad_scores,
                    real[:, :, ::1] grad_q, real[:, :, ::1] grad_k, real[:, :, ::1] grad_v, real[:, ::1] packed_a,
                    real[:, ::1] packed_b, real[:, ::1] tile, int threads):
    """Each head on one thread of the team, in the two (T, T) scratch buffers (and, float32,
    the packing buffers) of that thread."""
    cdef Py_ssize_t heads = q.shape[0], n
    cdef int t
    for n in prange(heads, schedule="static", num_threads=threads, nogil=True):
        t = threadid()
        _backward_head(n, grad_out, q, k, v, out, logsumexp, scale, &probs[t, 0, 0], &grad_scores[t, 0, 0],
                       grad_q, grad_k, grad_v, &packed_a[t, 0], &packed_b[t, 0], &tile[t, 0])


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _backward_head(Py_ssize_t n, const real[:, :, ::1] grad_out, const real[:, :, ::1] q,
                         const real[:, :, ::1] k, const real[:, :, ::1] v, const real[:, :, ::1] out,
                         const real[:, ::1] logsumexp, real scale, real* probs, real* grad_scores,
                         real[:, :, ::1] grad_q, real[:, :, ::1] grad_k, real[:, :, ::1] grad_v,
                         real* packed_a, real* packed_b, real* tile) noexcept nogil:
    """Head n's backward; probs and grad_scores are (T, T) scratch, packed_a, packed_b and
    tile the float32 products' packing buffers. Entries j > i of both are zeros (the
    float32 products read them as such), and only j <= i of q kᵀ and g vᵀ are read."""
    cdef Py_ssize_t steps = q.shape[1], size = q.shape[2], i, j, c
    cdef double inner
    cdef real* p_row
    cdef real* ds_row
    # p, rebuilt: e^(scale sᵢⱼ - ℓᵢ) for j <= i, else 0
    if real is float:  # the same steps as below, in tinylm_attention.h
        tinylm_attention_scores(steps, size, &q[n, 0, 0], &k[n, 0, 0], probs, packed_a, packed_b, tile)
        tinylm_attention_probs_rows(steps, probs, scale, &logsumexp[n, 0])
        tinylm_attention_causal_product(steps, size, probs, 1, steps, True, &grad_out[n, 0, 0], size,
                                        &grad_v[n, 0, 0], size, packed_a, packed_b, tile)  # pᵀ g
        tinylm_attention_scores(steps, size, &grad_out[n, 0, 0], &v[n, 0, 0], grad_scores, packed_a, packed_b,
                                tile)  # g vᵀ
        tinylm_attention_dscores_rows(steps, size, probs, grad_scores, &grad_out[n, 0, 0], &out[n, 0, 0], scale)
    else:
        # p, rebuilt: e^(scale sᵢⱼ - ℓᵢ) for j <= i, else 0
        _gemm(False, True, steps, steps, size, &q[n, 0, 0], size, &k[n, 0, 0], size, probs, steps)
        for i in range(steps):
            p_row = probs + i * steps
            for j in range(i + 1):
                p_row[j] = _exp(p_row[j] * scale - logsumexp[n, i])
            for j in range(i + 1, steps):
                p_row[j] = 0
        _gemm(True, False, steps, size, steps, probs, steps, &grad_out[n, 0, 0], size, &grad_v[n, 0, 0], size)  # pᵀ g
        _gemm(False, True, steps, steps, size, &grad_out[n, 0, 0], size, &v[n, 0, 0], size, grad_scores, steps)  # g vᵀ
        for i in range(steps):
            inner = 0  # Dᵢ = gᵢ · oᵢ
            for c in range(size):
                inner += grad_out[n, i, c] * out[n, i, c]
            p_row, ds_row = probs + i * steps, grad_scores + i * steps
            for j in range(i + 1):  # scale · dL/ds = scale · p (dL/dp - D)
                ds_row[j] = scale * (p_row[j] * (ds_row[j] - <real>inner))
            for j in range(i + 1, steps):  # p is 0 there
                ds_row[j] = 0
    if real is float:  # dL/ds k, then dL/dsᵀ q
        tinylm_attention_causal_product(steps, size, grad_scores, steps, 1, False, &k[n, 0, 0], size,
                                        &grad_q[n, 0, 0], size, packed_a, packed_b, tile)
        tinylm_attention_causal_product(steps, size, grad_scores, 1, steps, True, &q[n, 0, 0], size,
                                        &grad_k[n, 0, 0], size, packed_a, packed_b, tile)
    else:
        _gemm(False, False, steps, size, steps, grad_scores, steps, &k[n, 0, 0], size, &grad_q[n, 0, 0], size)
        _gemm(True, False, steps, size, steps, grad_scores, steps, &q[n, 0, 0], size, &grad_k[n, 0, 0], size)


def _threads(heads, steps, size, dtype):
    """The team for ``heads`` heads: ``threads_for`` the (T, T) scores of every head (the
    kernels' one rule), never more threads than heads, and, for float64, whose products call
    NumPy's BLAS, one while that BLAS runs threads of its own (``blas.team_may_call_blas``)."""
    if dtype != np.float32 and not _blas.team_may_call_blas():
        return 1
    return max(1, min(heads, threads_for(heads * steps * max(steps, size))))


def _scratch(threads, steps, size, dtype):
    """Each thread's buffers for packing a head's float32 operands, and its edge tile (one
    element each for float64, which does not use them)."""
    if dtype != np.float32:
        return [np.empty((threads, 1), dtype) for _ in range(3)]
    return [np.empty((threads, tinylm_attention_packed_a_floats(steps, size)), dtype),
            np.empty((threads, tinylm_attention_packed_b_floats(steps, size)), dtype),
            np.empty((threads, TINYLM_GEMM_MR * TINYLM_GEMM_NR), dtype)]


def _usable(heads, steps, size, dtype):
    """Whether the compiled loops serve: a non-empty problem, and for float64 NumPy's BLAS found."""
    return heads and steps and size and (dtype == np.float32 or _blas_ready(max(steps, size) ** 2))


def _contiguous(*arrays):
    return [np.ascontiguousarray(a) for a in arrays]


def causal_attention_forward(q, k, v, scale):
    """As ``tinylm.reference.causal_attention.causal_attention_forward``: (out (N, T, hs), logsumexp (N, T))."""
    q, k, v = (np.asarray(a) for a in (q, k, v))
    reference.check_qkv("causal_attention_forward", q, k, v)
    float_dtype("causal_attention_forward", "q, k, v", q)
    scale = real_scalar("causal_attention_forward", "scale", scale)
    heads, steps, size = q.shape
    if not _usable(heads, steps, size, q.dtype):
        return reference.causal_attention_forward(q, k, v, scale)
    q, k, v = _contiguous(q, k, v)
    out = np.empty_like(q)
    logsumexp = np.empty((heads, steps), q.dtype)
    threads = _threads(heads, steps, size, q.dtype)
    scores = np.empty((threads, steps, steps), q.dtype)  # one head's (T, T) per thread, reused
    _forward(q, k, v, scale, scores, out, logsumexp, *_scratch(threads, steps, size, q.dtype), threads)
    return out, logsumexp


def causal_attention_backward(grad_out, q, k, v, out, logsumexp, scale):
    """As ``tinylm.reference.causal_attention.causal_attention_backward``: (dq, dk, dv), each (N, T, hs)."""
    grad_out, q, k, v, out, logsumexp = (np.asarray(a) for a in (grad_out, q, k, v, out, logsumexp))
    op = "causal_attention_backward"
    reference.check_qkv(op, q, k, v)
    float_dtype(op, "q, k, v", q)
    if grad_out.shape != q.shape or out.shape != q.shape or grad_out.dtype != q.dtype or out.dtype != q.dtype:
        raise ValueError(f"{op}: grad_out {grad_out.shape} {grad_out.dtype} and out {out.shape} {out.dtype} "
                         f"must be (N, T, hs) = {q.shape} {q.dtype}")
    if logsumexp.shape != q.shape[:2] or logsumexp.dtype != q.dtype:
        raise ValueError(f"{op}: logsumexp {logsumexp.shape} {logsumexp.dtype} must be (N, T) = {q.shape[:2]} {q.dtype}")
    scale = real_scalar(op, "scale", scale)
    heads, steps, size = q.shape
    if not _usable(heads, steps, size, q.dtype):
        return reference.causal_attention_backward(grad_out, q, k, v, out, logsumexp, scale)
    grad_out, q, k, v, out, logsumexp = _contiguous(grad_out, q, k, v, out, logsumexp)
    grad_q, grad_k, grad_v = np.empty_like(q), np.empty_like(q), np.empty_like(q)
    threads = _threads(heads, steps, size, q.dtype)
    probs, grad_scores = np.empty((threads, steps, steps), q.dtype), np.empty((threads, steps, steps), q.dtype)
    _backward(grad_out, q, k, v, out, logsumexp, scale, probs, grad_scores, grad_q, grad_k, grad_v,
              *_scratch(threads, steps, size, q.dtype), threads)
    return grad_q, grad_k, grad_v
