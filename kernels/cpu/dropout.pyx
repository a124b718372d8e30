# cython: language_level=3
"""Dropout as Cython kernels: the drop-ins for ``tinylm/reference/dropout.py``.

    forward:   mₖ = [bits24(seed, c(k)) ≥ threshold(p)],  yₖ = xₖ · mₖ · 1/(1-p)
               c(k) = k + offset + (k // block) · gap   (block = 0: c(k) = k + offset)
    backward:  dxₖ = dyₖ · mₖ · 1/(1-p)

Same names, signatures, masks and results as the reference, bit for bit: the random
bits are SplitMix64 at counter c(k) (``tinylm_dropout_bits`` and ``tinylm_dropout_counter``
in tinylm_math.h), a pure function of (seed, c(k)), so threads can take any slice of
the elements. What differs: one pass that draws, masks and scales each element, where
the reference makes about ten (N,) uint64 temporaries for the hash.
"""

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.stdint cimport uint8_t, uint32_t, uint64_t

include "_math.pxi"

from tinylm.kernels import threads_for

cdef extern from "tinylm_math.h" nogil:
    uint32_t tinylm_dropout_bits(uint64_t seed, uint64_t k)
    uint64_t tinylm_dropout_counter(uint64_t k, uint64_t offset, uint64_t block, uint64_t gap)

from tinylm.kernels.checks import UINT64_RANGE, float_array, int_scalar, real_scalar
from tinylm.reference.dropout import check_counter_map, dropout_threshold



@cython.boundscheck(False)
@cython.wraparound(False)
def _forward(const real[::1] x, uint64_t seed, uint64_t offset, uint64_t block, uint64_t gap,
             uint32_t threshold, real scale, real[::1] y, uint8_t[::1] mask, int threads):
    cdef Py_ssize_t k
    cdef uint8_t keep
    for k in prange(x.shape[0], schedule="static", num_threads=threads, nogil=True):
        keep = tinylm_dropout_bits(seed, tinylm_dropout_counter(<uint64_t>k, offset, block, gap)) >= threshold
        mask[k] = keep
        y[k] = x[k] * <real>keep * scale


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward(const real[::1] grad_y, const uint8_t[::1] mask, real scale, real[::1] grad_x,
                    int threads):
    cdef Py_ssize_t k
    for k in prange(grad_y.shape[0], schedule="static", num_threads=threads, nogil=True):
        grad_x[k] = grad_y[k] * <real>mask[k] * scale


def _scale(p, dtype):
    return dtype.type(1.0 / (1.0 - p)) if p < 1.0 else dtype.type(0.0)


def dropout_forward(x, p, seed, offset=0, block=0, gap=0):
    """-> (y = x · mask / (1 - p), mask uint8 of x's shape); element k drawn at counter
    k + offset + (k // block) · gap (block = 0: k + offset)."""
    x = float_array("dropout_forward", "x", x)
    p = real_scalar("dropout_forward", "p", p)
    threshold = dropout_threshold(p)  # also checks 0 <= p <= 1
    seed = int_scalar("dropout_forward", "seed", seed, *UINT64_RANGE)
    offset, block, gap = check_counter_map("dropout_forward", x.size, offset, block, gap)
    flat = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(flat)
    mask = np.empty(flat.shape, dtype=np.uint8)
    threads = threads_for(flat.size)
    _forward(flat, seed, offset, block, gap, threshold, _scale(p, flat.dtype), y, mask, threads)
    return y.reshape(x.shape), mask.reshape(x.shape)


def dropout_backward(grad_y, mask, p):
    """dL/dx = dL/dy · mask / (1 - p)."""
    grad_y = float_array("dropout_backward", "grad_y", grad_y)
    p = real_scalar("dropout_backward", "p", p)
    mask = np.asarray(mask)
    if mask.shape != grad_y.shape or mask.dtype != np.uint8:
        raise ValueError(f"dropout_backward: mask {mask.shape} {mask.dtype} must be uint8 of grad_y's shape {grad_y.shape}")
    dropout_threshold(p)
    flat = np.ascontiguousarray(grad_y).reshape(-1)
    grad_x = np.empty_like(flat)
    threads = threads_for(flat.size)
    _backward(flat, np.ascontiguousarray(mask).reshape(-1), _scale(p, flat.dtype), grad_x, threads)
    return grad_x.reshape(grad_y.shape)
