# cython: language_level=3
"""Attention's scale + mask + softmax as Cython kernels: the drop-ins for
``tinylm/reference/attention_softmax.py``.

    forward:   pᵢⱼ = e^(zᵢⱼ - mᵢ) / dᵢ,  zᵢⱼ = scale · sᵢⱼ + maskᵢⱼ  (keys j > i dropped if causal,
               keys j with key_padding_mask[b, j] dropped from every row of batch row b)
    backward:  dsᵢⱼ = scale · pᵢⱼ (gᵢⱼ - Σₖ gᵢₖ pᵢₖ)

Same names, signatures and meaning as the reference. What differs, and why:

- Per row, four short passes over the row while it sits in L1: z and its maximum, then
  e^(z - max) in place, the sum (in double), the division. The exponential pass is
  branch-free, so GCC vectorises it (tinylm_math.h's exp); a one-pass online softmax
  (running maximum and rescaled running sum together, as the CUDA kernel does, where
  the row is read from global memory once) has a branch and a second exp per element
  and ran at half the speed here. The reference materialises z, z - max and e^z as whole
  (..., L, S) temporaries.
- Causal rows stop at key i: the dropped keys are never read, only written as 0.
- The key padding mask arrives as uint8 (B, S) (a view of the bool array, no copy), and
  each row finds its batch row as r // (rows per batch row): row b of the mask is read
  in place, never broadcast to the scores' shape. A padded key's z is -inf, whatever
  its score, as in the reference.
- An all-dropped row (every key -inf) is written as zeros, and a row with a NaN score
  as NaN at every key not dropped, as in the reference.
- Threads split the rows when there are enough elements; each row is reduced in the
  same order whatever the thread count.
- The wrapper checks dtypes and the masks' shapes (the reference's own check) and makes
  the inputs contiguous.
"""

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN

include "_math.pxi"

from tinylm.kernels import threads_for

from tinylm.kernels.checks import flag, float_array, real_scalar
from tinylm.reference.attention_softmax import check_attention_mask



@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline void _forward_row(const real* scores, const real* mask, const unsigned char* padding, Py_ssize_t keys,
                              Py_ssize_t visible, real scale, real* probs) noexcept nogil:
    """One row: keys [0, visible) are seen, the rest are dropped (causal); so are the
    keys j with padding[j] != 0 (padding NULL: none)."""
    cdef Py_ssize_t j
    cdef real running_max = -INFINITY, denominator = 0
    cdef double total = 0
    cdef bint any_seen = False, any_nan = False
    for j in range(visible):  # z into the output row, and its maximum
        probs[j] = scores[j] * scale + (mask[j] if mask != NULL else 0)
        if padding != NULL and padding[j]:
            probs[j] = -INFINITY  # a padding key: dropped, even if its score is NaN
        any_seen = any_seen or probs[j] != -INFINITY
        any_nan = any_nan or probs[j] != probs[j]
        if probs[j] > running_max:
            running_max = probs[j]
    if any_nan:  # NaN at every key not dropped, as the reference: a NaN is never hidden
        for j in range(keys):
            probs[j] = NAN if j < visible and probs[j] != -INFINITY else 0
        return
    elif not any_seen:  # every key dropped: no distribution, a row of zeros
        visible = 0
    for j in range(visible):  # e^(z - max): vectorised; -inf scores give exactly 0
        probs[j] = _exp(probs[j] - running_max)
    for j in range(visible):
        total += probs[j]
    denominator = <real>total
    for j in range(visible):
        probs[j] = probs[j] / denominator
    for j in range(visible, keys):
        probs[j] = 0


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
def _forward(const real[:, ::1] scores, Py_ssize_t queries, real scale, const real[:, ::1] mask,
                   bint has_mask, bint causal, const unsigned char[:, ::1] padding, Py_ssize_t batch_rows,
                   bint has_padding, real[:, ::1] probs, int threads):
    """scores (R, S) with R = B · batch_rows rows; row r is query r % queries of batch row
    r // batch_rows; mask (L, S) and padding (B, S) are read only when has_mask / has_padding."""
    cdef Py_ssize_t r, query, keys = scores.shape[1]
    for r in prange(scores.shape[0], schedule="static", num_threads=threads, nogil=True):
        query = r % queries
        _forward_row(&scores[r, 0], &mask[query, 0] if has_mask else NULL,
                     &padding[r // batch_rows, 0] if has_padding else NULL, keys,
                     min(query + 1, keys) if causal else keys, scale, &probs[r, 0])


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _backward_row(const real[:, ::1] grad_probs, const real[:, ::1] probs, Py_ssize_t r,
                               real scale, real[:, ::1] grad_scores) noexcept nogil:
    cdef Py_ssize_t j, keys = probs.shape[1]
    cdef double inner = 0
    for j in range(keys):
        inner += grad_probs[r, j] * probs[r, j]
    for j in range(keys):
        grad_scores[r, j] = probs[r, j] * (grad_probs[r, j] - <real>inner) * scale


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward(const real[:, ::1] grad_probs, const real[:, ::1] probs, real scale,
                    real[:, ::1] grad_scores, int threads):
    cdef Py_ssize_t r
    for r in prange(probs.shape[0], schedule="static", num_threads=threads, nogil=True):
        _backward_row(grad_probs, probs, r, scale, grad_scores)


def attention_softmax_forward(scores, scale, mask=None, causal=False, key_padding_mask=None):
    """softmax over the last axis of scale · scores + mask; scores (..., L, S), mask an
    additive (L, S) array or None; causal drops keys j > i; key_padding_mask, bool (B, S)
    for scores (B, ..., L, S), drops key j from every row of batch row b where True."""
    op = "attention_softmax_forward"
    scores = float_array(op, "scores", scores)
    scale, causal = real_scalar(op, "scale", scale), flag(op, "causal", causal)
    mask = None if mask is None else np.asarray(mask)
    key_padding_mask = None if key_padding_mask is None else np.asarray(key_padding_mask)
    check_attention_mask(op, scores, mask, key_padding_mask)  # shapes: the kernel reads (L, S) and (B, S)
    if mask is not None and mask.dtype.kind != "f":
        raise TypeError(f"{op}: mask must be an additive float array (0 keeps, -inf drops), got {mask.dtype}")
    queries, keys = scores.shape[-2:]
    if scores.size == 0:
        return np.zeros(scores.shape, dtype=scores.dtype)
    rows = np.ascontiguousarray(scores).reshape(-1, keys)  # (R, S), R = prod(...) · L
    table = np.ascontiguousarray(mask if mask is not None else np.zeros((0, 0)), dtype=scores.dtype)
    has_padding = key_padding_mask is not None
    # bool and uint8 share one byte per element: a view, not a copy. No mask: an empty table never read.
    padding = np.ascontiguousarray(key_padding_mask if has_padding else np.zeros((0, 0), bool)).view(np.uint8)
    batch_rows = rows.shape[0] // scores.shape[0] if has_padding else 1  # rows per batch row: prod(...) · L
    probs = np.empty_like(rows)
    if rows.size:
        threads = threads_for(rows.size)
        _forward(rows, queries, scale, table, mask is not None, causal, padding, batch_rows, has_padding, probs,
                 threads)
    return probs.reshape(scores.shape)


def attention_softmax_backward(grad_probs, probs, scale):
    """dL/dscores = scale · p ⊙ (g - Σ g p), row by row."""
    op = "attention_softmax_backward"
    probs = float_array(op, "probs", probs)
    grad_probs = float_array(op, "grad_probs", grad_probs)
    scale = real_scalar(op, "scale", scale)
    if grad_probs.shape != probs.shape or grad_probs.dtype != probs.dtype or probs.ndim < 1:
        raise ValueError(f"{op}: grad_probs {grad_probs.shape} {grad_probs.dtype} must match probs "
                         f"{probs.shape} {probs.dtype}")
    if probs.size == 0:
        return np.zeros(probs.shape, dtype=probs.dtype)
    keys = probs.shape[-1]
    p = np.ascontiguousarray(probs).reshape(-1, keys)  # (R, S)
    g = np.ascontiguousarray(grad_probs).reshape(-1, keys)
    grad_scores = np.empty_like(p)
    if p.size:
        threads = threads_for(p.size)
        _backward(g, p, scale, grad_scores, threads)
    return grad_scores.reshape(probs.shape)
