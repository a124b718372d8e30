# cython: language_level=3
"""Embedding as Cython kernels: the gather and scatter-add of ``tinylm.reference.embedding``.

    forward:   out[n, :] = weight[ids[n], :]
    backward:  grad_weight[ids[n], :] += grad_output[n, :]     for n = 0 .. N-1

Same names, signatures and meaning as the reference. What differs, and why:

- The Python-level wrapper checks everything first (dtype, shapes, every id in
  [0, num_embeddings)) and makes the inputs contiguous, so the ``nogil`` loop below
  may index without bounds checks and can never touch memory outside the buffers.
- Threads split the *columns* (the embedding dimension), never the positions: two
  positions with the same id then never write one row at the same time, so no atomics
  are needed, and each element is summed over n in the same order as the reference,
  whatever the thread count, so results do not depend on it.
- The forward splits the positions between threads (each writes its own output rows)
  and copies each row with one memcpy.
"""

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memcpy

include "_math.pxi"

from tinylm.kernels import threads_for
from tinylm.kernels.checks import float_array, int_scalar


# Bounds checks and negative-index wrapping are off in the kernels only (the wrappers
# have already guaranteed every index is in range); the wrappers keep Python semantics.
@cython.boundscheck(False)
@cython.wraparound(False)
def _gather_rows(
    const real[:, ::1] weight,        # (V, D)
    const int64_t[::1] ids,           # (N,), every id already checked to be in range
    real[:, ::1] out,                 # (N, D)
    int threads,
):
    cdef Py_ssize_t n, dim = weight.shape[1]
    for n in prange(ids.shape[0], schedule="static", num_threads=threads, nogil=True):
        memcpy(&out[n, 0], &weight[ids[n], 0], dim * sizeof(real))


def _checked_flat_ids(op, ids, num_embeddings):
    """ids as a contiguous int64 (N,) array, every id in [0, num_embeddings), else IndexError."""
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: ids must be an integer array, got {ids.dtype}")
    if ids.size and ids.dtype.kind == "u" and int(ids.max()) >= num_embeddings:
        raise IndexError(  # checked before the cast to int64, which would wrap ids >= 2**63
            f"{op}: id {int(ids.max())} is out of range for a vocabulary of {num_embeddings} "
            f"(ids must be in [0, {num_embeddings}))"
        )
    flat_ids = np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)  # (N,)
    if flat_ids.size:
        low, high = int(flat_ids.min()), int(flat_ids.max())
        if low < 0 or high >= num_embeddings:
            bad = low if low < 0 else high
            raise IndexError(
                f"{op}: id {bad} is out of range for a vocabulary of {num_embeddings} "
                f"(ids must be in [0, {num_embeddings}))"
            )
    return flat_ids


def embedding_forward(weight, ids):
    """out[n] = weight[ids[n]]: weight (V, D) float32/float64, ids integer of any shape
    -> a new (*ids.shape, D) array."""
    weight = float_array("embedding_forward", "weight", weight)
    ids = np.asarray(ids)
    if weight.ndim != 2:
        raise ValueError(f"embedding_forward: weight must be (num_embeddings, dim), got shape {weight.shape}")
    flat_ids = _checked_flat_ids("embedding_forward", ids, weight.shape[0])
    dim = weight.shape[1]
    out = np.empty((flat_ids.size, dim), dtype=weight.dtype)  # (N, D)
    if flat_ids.size and dim:
        table = np.ascontiguousarray(weight)
        threads = threads_for(out.size)
        _gather_rows(table, flat_ids, out, threads)
    return out.reshape(ids.shape + (dim,))


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
def _scatter_add_columns(
    const real[:, ::1] grad_output,   # (N, D)
    const int64_t[::1] ids,           # (N,), every id already checked to be in range
    real[:, ::1] grad_weight,         # (V, D), zeroed
    Py_ssize_t block,                 # columns per task
    int threads,
):
    cdef Py_ssize_t n_positions = grad_output.shape[0]
    cdef Py_ssize_t dim = grad_output.shape[1]
    cdef Py_ssize_t n_blocks = (dim + block - 1) // block
    cdef Py_ssize_t b, n, d, row, start, stop
    for b in prange(n_blocks, schedule="static", num_threads=threads, nogil=True):
        start = b * block
        stop = start + block
        if stop > dim:
            stop = dim
        for n in range(n_positions):
            row = ids[n]
            for d in range(start, stop):
                grad_weight[row, d] += grad_output[n, d]


def embedding_backward(grad_output, ids, num_embeddings):
    """grad_weight[v] = sum of grad_output[n] over positions n with ids[n] == v.

    grad_output: float32/float64 array of shape (*ids.shape, D); ids: integer array;
    returns a new (num_embeddings, D) array of grad_output's dtype.
    """
    grad_output = float_array("embedding_backward", "grad_output", grad_output)
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding_backward: ids must be an integer array, got {ids.dtype}")
    if grad_output.ndim < 1 or grad_output.shape[:-1] != ids.shape:
        raise ValueError(
            f"embedding_backward: grad_output {grad_output.shape} does not match ids {ids.shape} + (D,)"
        )
    num_embeddings = int_scalar("embedding_backward", "num_embeddings", num_embeddings, 0, None)
    dim = grad_output.shape[-1]
    flat_ids = _checked_flat_ids("embedding_backward", ids, num_embeddings)
    grad_weight = np.zeros((num_embeddings, dim), dtype=grad_output.dtype)
    if flat_ids.size == 0 or dim == 0:
        return grad_weight
    rows = np.ascontiguousarray(grad_output.reshape(flat_ids.size, dim))  # (N, D)
    # Waking a thread team costs tens of microseconds: small problems run on one thread.
    threads = threads_for(rows.size)
    block = max(16, (dim + threads - 1) // threads)  # >= 16 columns per task: whole cache lines
    _scatter_add_columns(rows, flat_ids, grad_weight, block, threads)
    return grad_weight
