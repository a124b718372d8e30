# cython: language_level=3
"""Cross-entropy as Cython kernels: the drop-ins for ``tinylm/reference/cross_entropy.py``.

    forward:   lseₙ = log Σⱼ e^xₙⱼ,  lossₙ = lseₙ - xₙₜₙ   (0 where tₙ = ignore_index)
    backward:  dxₙⱼ = (e^(xₙⱼ - lseₙ) - [j = tₙ]) · dlossₙ

Same names, signatures and meaning as the reference. What differs, and why:

- One pass per row for the maximum, one for Σ e^(x - max) (accumulated in double, so a
  row of 50,000 classes loses nothing), where the reference makes (N, C) temporaries for
  the shift and the exponentials; the backward writes each gradient element once. The
  exponentials go through a 256-element buffer on the stack first: a loop that only
  computes e^x vectorises, one that also adds into a double does not.
- Rows are independent, so threads split the rows (for batches big enough to pay for
  waking them), and every row is summed in the same order whatever the thread count.
- The wrapper checks dtypes, shapes and every target (in [0, C) or ignore_index) and
  makes the inputs contiguous, so the loops index without bounds checks.
"""

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.stdint cimport int64_t

include "_math.pxi"

from tinylm.kernels import threads_for

from tinylm.kernels.checks import INT64_RANGE, float_array, int_scalar



DEF CHUNK = 256  # classes exponentiated per vectorised pass, into a buffer on the stack


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _forward_row(const real* logits, Py_ssize_t classes, int64_t target, int64_t ignore_index,
                              real* loss, real* logsumexp) noexcept nogil:
    cdef Py_ssize_t j, start, count
    cdef real row_max = logits[0]
    cdef real exps[CHUNK]
    cdef double total = 0
    for j in range(1, classes):
        if logits[j] > row_max:
            row_max = logits[j]
    for start in range(0, classes, CHUNK):
        count = min(CHUNK, classes - start)
        for j in range(count):  # branch-free: vectorised
            exps[j] = _exp(logits[start + j] - row_max)  # each in (0, 1]: no overflow for logits of 1e4
        for j in range(count):
            total += exps[j]
    logsumexp[0] = row_max + <real>log(total)
    loss[0] = 0 if target == ignore_index else logsumexp[0] - logits[target]


@cython.boundscheck(False)
@cython.wraparound(False)
def _forward(const real[:, ::1] logits, const int64_t[::1] targets, int64_t ignore_index,
                   real[::1] losses, real[::1] logsumexp, int threads):
    cdef Py_ssize_t n
    for n in prange(logits.shape[0], schedule="static", num_threads=threads, nogil=True):
        _forward_row(&logits[n, 0], logits.shape[1], targets[n], ignore_index, &losses[n], &logsumexp[n])


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _backward_row(const real* logits, Py_ssize_t classes, int64_t target, int64_t ignore_index,
                               real grad_loss, real lse, real* grad) noexcept nogil:
    cdef Py_ssize_t j
    if target == ignore_index:
        for j in range(classes):
            grad[j] = 0
        return
    for j in range(classes):  # branch-free: vectorised
        grad[j] = _exp(logits[j] - lse) * grad_loss  # softmax ...
    grad[target] = (_exp(logits[target] - lse) - 1) * grad_loss  # ... minus one-hot


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward(const real[::1] grad_losses, const real[:, ::1] logits, const int64_t[::1] targets,
                    const real[::1] logsumexp, int64_t ignore_index, real[:, ::1] grad, int threads):
    cdef Py_ssize_t n
    for n in prange(logits.shape[0], schedule="static", num_threads=threads, nogil=True):
        _backward_row(&logits[n, 0], logits.shape[1], targets[n], ignore_index, grad_losses[n], logsumexp[n],
                      &grad[n, 0])


def _checked(op, logits, targets, ignore_index):
    """(contiguous logits (N, C) float, contiguous int64 targets (N,)), or a clear error."""
    logits = float_array(op, "logits", logits)
    targets = np.asarray(targets)
    ignore_index = int_scalar(op, "ignore_index", ignore_index, *INT64_RANGE)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be integers, got {targets.dtype}")
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"{op}: logits must be (N, C) and targets (N,), got {logits.shape} and {targets.shape}")
    if logits.shape[1] == 0 and logits.shape[0] > 0:
        raise ValueError(f"{op}: logits {logits.shape} have no classes")
    classes = logits.shape[1]
    wide = targets.astype(object) if targets.dtype == np.uint64 else targets  # no wrap-around in the check
    bad = (wide != ignore_index) & ((wide < 0) | (wide >= classes))
    if bool(bad.any()):
        raise IndexError(f"{op}: target {int(targets[bad][0])} is out of range for {classes} classes "
                         f"(ignore_index={ignore_index})")
    return np.ascontiguousarray(logits), np.ascontiguousarray(targets, dtype=np.int64), ignore_index


def cross_entropy_forward(logits, targets, ignore_index):
    """-> (losses (N,), logsumexp (N,)) in the logits' dtype; loss 0 on ignored rows."""
    logits, targets, ignore_index = _checked("cross_entropy_forward", logits, targets, ignore_index)
    losses = np.empty(logits.shape[0], dtype=logits.dtype)
    logsumexp = np.empty(logits.shape[0], dtype=logits.dtype)
    threads = threads_for(logits.size)
    _forward(logits, targets, ignore_index, losses, logsumexp, threads)
    return losses, logsumexp


def cross_entropy_backward(grad_losses, logits, targets, logsumexp, ignore_index):
    """dL/dlogits = (softmax - onehot) · grad_losses[:, None], 0 on ignored rows."""
    op = "cross_entropy_backward"
    logits, targets, ignore_index = _checked(op, logits, targets, ignore_index)
    rows = logits.shape[0]
    grad_losses = np.ascontiguousarray(float_array(op, "grad_losses", grad_losses), dtype=logits.dtype)
    logsumexp = np.ascontiguousarray(float_array(op, "logsumexp", logsumexp), dtype=logits.dtype)
    if grad_losses.shape != (rows,) or logsumexp.shape != (rows,):
        raise ValueError(f"cross_entropy_backward: grad_losses {grad_losses.shape} and logsumexp {logsumexp.shape} "
                         f"must both be ({rows},) for logits {logits.shape}")
    grad = np.empty_like(logits)
    threads = threads_for(logits.size)
    _backward(grad_losses, logits, targets, logsumexp, ignore_index, grad, threads)
    return grad
