# cython: language_level=3
"""Attention's scale + mask + softmax as Cython kernels: the drop-ins for
``tinylm/reference/softmax.py``.

    forward:   pᵢⱼ = e^(zᵢⱼ - mᵢ) / dᵢ,  zᵢⱼ = scale · sᵢⱼ + maskᵢⱼ  (keys j > i dropped if causal)
    backward:  dsᵢⱼ = scale · pᵢⱼ (gᵢⱼ - Σₖ gᵢₖ pᵢₖ)

Same names, signatures and meaning as the reference. What differs, and why:

- Online softmax: one pass over a row finds the running maximum mᵢ and the running
  denominator dᵢ together, rescaling d by e^(m_old - m_new) whenever the maximum grows;
  a second pass writes the probabilities. The reference materialises z, z - max and e^z
  as whole (..., L, S) temporaries.
- Causal rows stop at key i: the dropped keys are never read, only written as 0.
- An all-dropped row (every key -inf) stays at m = -inf and is written as zeros, as in
  the reference; -inf scores are skipped rather than exponentiated (e^(-inf - -inf) is NaN).
- Threads split the rows when there are enough elements; each row is reduced in the
  same order whatever the thread count.
- The wrapper checks dtypes and the mask's shape and makes the inputs contiguous.
"""

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.math cimport INFINITY

include "_math.pxi"

from tinylm.kernels.cpu._checks import flag, float_array, real_scalar

PARALLEL_MIN_ELEMENTS = 1 << 16


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline void _forward_row(const real[:, ::1] scores, Py_ssize_t r, Py_ssize_t query, real scale,
                              const real[:, ::1] mask, bint has_mask, bint causal, real[:, ::1] probs) noexcept nogil:
    cdef Py_ssize_t j, keys = scores.shape[1]
    cdef Py_ssize_t visible = min(query + 1, keys) if causal else keys
    cdef real z, running_max = -INFINITY, denominator = 0
    for j in range(visible):  # pass 1: running maximum and denominator together
        z = scores[r, j] * scale
        if has_mask:
            z = z + mask[query, j]
        if z == -INFINITY:
            continue  # contributes e^-inf = 0
        if z > running_max:
            denominator = denominator * _exp(running_max - z) + 1
            running_max = z
        else:
            denominator = denominator + _exp(z - running_max)
    for j in range(keys):  # pass 2: the probabilities
        if j >= visible or running_max == -INFINITY:
            probs[r, j] = 0
        else:
            z = scores[r, j] * scale
            if has_mask:
                z = z + mask[query, j]
            probs[r, j] = _exp(z - running_max) / denominator


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _forward(const real[:, ::1] scores, Py_ssize_t queries, real scale, const real[:, ::1] mask,
                   bint has_mask, bint causal, real[:, ::1] probs, int threads) noexcept nogil:
    cdef Py_ssize_t r
    for r in prange(scores.shape[0], schedule="static", num_threads=threads):
        _forward_row(scores, r, r % queries, scale, mask, has_mask, causal, probs)


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
cdef void _backward(const real[:, ::1] grad_probs, const real[:, ::1] probs, real scale,
                    real[:, ::1] grad_scores, int threads) noexcept nogil:
    cdef Py_ssize_t r
    for r in prange(probs.shape[0], schedule="static", num_threads=threads):
        _backward_row(grad_probs, probs, r, scale, grad_scores)


def attention_softmax_forward(scores, scale, mask=None, causal=False):
    """softmax over the last axis of scale · scores + mask; scores (..., L, S), mask an
    additive (L, S) array or None; causal drops keys j > i."""
    op = "attention_softmax_forward"
    scores = float_array(op, "scores", scores)
    scale, causal = real_scalar(op, "scale", scale), flag(op, "causal", causal)
    if scores.ndim < 2:
        raise ValueError(f"{op}: scores must be (..., L, S), got shape {scores.shape}")
    queries, keys = scores.shape[-2:]
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (queries, keys):
            raise ValueError(f"{op}: mask {mask.shape} must be (L, S) = {(queries, keys)}")
        if mask.dtype.kind != "f":
            raise TypeError(f"{op}: mask must be an additive float array (0 keeps, -inf drops), got {mask.dtype}")
    if scores.size == 0:
        return np.zeros(scores.shape, dtype=scores.dtype)
    rows = np.ascontiguousarray(scores).reshape(-1, keys)  # (R, S), R = prod(...) · L
    table = np.ascontiguousarray(mask if mask is not None else np.zeros((0, 0)), dtype=scores.dtype)
    probs = np.empty_like(rows)
    if rows.size:
        threads = tinylm_get_num_threads() if rows.size >= PARALLEL_MIN_ELEMENTS else 1
        if rows.dtype == np.float32:
            _forward[float](rows, queries, scale, table, mask is not None, causal, probs, threads)
        else:
            _forward[double](rows, queries, scale, table, mask is not None, causal, probs, threads)
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
        threads = tinylm_get_num_threads() if p.size >= PARALLEL_MIN_ELEMENTS else 1
        if p.dtype == np.float32:
            _backward[float](g, p, scale, grad_scores, threads)
        else:
            _backward[double](g, p, scale, grad_scores, threads)
    return grad_scores.reshape(probs.shape)
