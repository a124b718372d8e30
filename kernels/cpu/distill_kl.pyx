# cython: language_level=3
"""Distillation KL as Cython kernels: the drop-ins for ``tinylm/reference/distill_kl.py``.

For student logits z and teacher logits t (N, V) at temperature T, per row:

    forward:   lse_z = log Σᵥ e^(zᵥ/T),   lse_t = log Σᵥ e^(tᵥ/T)
               kl = Σᵥ pᵥ (log pᵥ - log qᵥ),   log p = t/T - lse_t,   log q = z/T - lse_z
    backward:  dzᵥ = (e^(zᵥ/T - lse_z) - e^(tᵥ/T - lse_t)) / T · dkl

(kl 0 and gradient 0 on rows the mask leaves out). Same names, signatures and meaning as
the reference. What differs, and why:

- One row at a time with no (N, V) temporaries, where the reference makes several (the
  scaled logits, both log-softmaxes, p): one pass for both row maxima, one for both sums
  of exponentials and the KL, written with Σ p = 1 as
  kl = Σᵥ eᵥ (tᵥ/T - zᵥ/T) / Σᵥ eᵥ - lse_t + lse_z, eᵥ = e^(tᵥ/T - max t/T), so that each
  element is exponentiated twice in all, not three times. The sums accumulate in double,
  so a row of 50,000 classes loses nothing. The exponentials go through 256-element
  buffers on the stack first: a loop that only computes e^x vectorises, one that also
  adds into a double does not.
- A term with p = 0 is skipped rather than computed as 0 · (-inf): the same 0 the
  reference's ``where`` gives.
- Rows are independent, so threads split the rows (for batches big enough to pay for
  waking them), and every row is summed in the same order whatever the thread count.
- The wrapper checks dtypes, shapes, the temperature and the mask and makes the inputs
  contiguous, so the loops index without bounds checks.
"""

import math

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.stdint cimport uint8_t

include "_math.pxi"

from tinylm.kernels import threads_for

from tinylm.kernels.checks import float_array, real_scalar


DEF CHUNK = 256  # classes exponentiated per vectorised pass, into buffers on the stack


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline void _forward_row(const real* z, const real* t, Py_ssize_t classes, real temperature, bint counted,
                              real* kl, real* lse_z, real* lse_t) noexcept nogil:
    """Two passes: the maxima, then both sums of exponentials and the KL's cross term.
    With e_v = e^(t_v/T - max), p_v = e_v / Σe and Σ_v p_v = 1, so

        kl = Σ_v p_v (t_v/T - z_v/T) - lse_t + lse_z = (Σ_v e_v (t_v/T - z_v/T)) / Σe - lse_t + lse_z

    all in double; a term with e_v = 0 (p = 0, and t_v/T may be -inf) is skipped."""
    cdef Py_ssize_t j, start, count
    cdef real z_max = z[0] / temperature
    cdef real t_max = t[0] / temperature
    cdef real scaled_z[CHUNK]
    cdef real scaled_t[CHUNK]
    cdef real exps_z[CHUNK]
    cdef real exps_t[CHUNK]
    cdef double sum_z = 0, sum_t = 0, cross = 0, log_sum_z, log_sum_t
    for j in range(1, classes):
        if z[j] / temperature > z_max:
            z_max = z[j] / temperature
        if t[j] / temperature > t_max:
            t_max = t[j] / temperature
    for start in range(0, classes, CHUNK):
        count = min(CHUNK, classes - start)
        for j in range(count):  # branch-free: vectorised; each exponential in (0, 1], no overflow at 1e4
            scaled_z[j] = z[start + j] / temperature
            scaled_t[j] = t[start + j] / temperature
            exps_z[j] = _exp(scaled_z[j] - z_max)
            exps_t[j] = _exp(scaled_t[j] - t_max)
        for j in range(count):
            sum_z += exps_z[j]
            sum_t += exps_t[j]
            if counted and exps_t[j] > 0:
                cross += <double>exps_t[j] * (<double>scaled_t[j] - <double>scaled_z[j])
    log_sum_z, log_sum_t = log(sum_z), log(sum_t)
    lse_z[0] = z_max + <real>log_sum_z
    lse_t[0] = t_max + <real>log_sum_t
    # kl = cross / Σe - (t_max + log Σe_t) + (z_max + log Σe_z), the maxima subtracted first: they are the big terms
    kl[0] = <real>(cross / sum_t + (<double>z_max - <double>t_max) + (log_sum_z - log_sum_t)) if counted else 0


@cython.boundscheck(False)
@cython.wraparound(False)
def _forward(const real[:, ::1] student, const real[:, ::1] teacher, real temperature, const uint8_t[::1] mask,
             real[::1] kl, real[::1] lse_z, real[::1] lse_t, int threads):
    cdef Py_ssize_t n
    for n in prange(student.shape[0], schedule="static", num_threads=threads, nogil=True):
        _forward_row(&student[n, 0], &teacher[n, 0], student.shape[1], temperature, mask[n], &kl[n], &lse_z[n],
                     &lse_t[n])


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline void _backward_row(const real* z, const real* t, Py_ssize_t classes, real temperature, bint counted,
                               real grad_kl, real lse_z, real lse_t, real* grad) noexcept nogil:
    cdef Py_ssize_t j
    cdef real scale = grad_kl / temperature
    if not counted:
        for j in range(classes):
            grad[j] = 0
        return
    for j in range(classes):  # branch-free: vectorised
        grad[j] = (_exp(z[j] / temperature - lse_z) - _exp(t[j] / temperature - lse_t)) * scale  # (q - p) / T


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward(const real[::1] grad_kl, const real[:, ::1] student, const real[:, ::1] teacher, real temperature,
              const real[::1] lse_z, const real[::1] lse_t, const uint8_t[::1] mask, real[:, ::1] grad, int threads):
    cdef Py_ssize_t n
    for n in prange(student.shape[0], schedule="static", num_threads=threads, nogil=True):
        _backward_row(&student[n, 0], &teacher[n, 0], student.shape[1], temperature, mask[n], grad_kl[n], lse_z[n],
                      lse_t[n], &grad[n, 0])


def _checked(op, student, teacher, temperature, mask):
    """(contiguous student and teacher (N, V) of one float dtype, the temperature as a
    float, the mask as contiguous uint8 (N,), all ones for None), or a clear error."""
    student = float_array(op, "student", student)
    teacher = float_array(op, "teacher", teacher)
    if teacher.dtype != student.dtype:
        raise TypeError(f"{op}: student and teacher logits must be floats of one dtype, "
                        f"got {student.dtype} and {teacher.dtype}")
    if student.ndim != 2 or teacher.shape != student.shape:
        raise ValueError(f"{op}: student and teacher logits must both be (N, V), got {student.shape} and "
                         f"{teacher.shape}")
    if student.shape[1] == 0:
        raise ValueError(f"{op}: logits {student.shape} have no classes")
    value = real_scalar(op, "temperature", temperature)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{op}: temperature must be a finite number > 0, got {temperature!r}")
    rows = student.shape[0]
    if mask is None:
        mask = np.ones(rows, dtype=np.uint8)
    else:
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"{op}: mask must be a bool array (True = a row that counts) or None, "
                            f"got {type(mask).__name__}")
        if mask.shape != (rows,):
            raise ValueError(f"{op}: mask {mask.shape} must be (N,) = ({rows},) for logits {student.shape}")
        if mask.dtype != bool:
            raise TypeError(f"{op}: mask must be a bool array (True = a row that counts), got {mask.dtype}")
        mask = np.ascontiguousarray(mask).view(np.uint8)
    return np.ascontiguousarray(student), np.ascontiguousarray(teacher), value, mask


def distill_kl_forward(student, teacher, temperature, mask=None):
    """-> (kl (N,), student_lse (N,), teacher_lse (N,)) in the logits' dtype, lse = log Σ e^(x/T)
    per row; kl 0 on rows the mask leaves out."""
    student, teacher, temperature, mask = _checked("distill_kl_forward", student, teacher, temperature, mask)
    rows = student.shape[0]
    kl, lse_z, lse_t = (np.empty(rows, dtype=student.dtype) for _ in range(3))
    _forward(student, teacher, temperature, mask, kl, lse_z, lse_t, threads_for(student.size))
    return kl, lse_z, lse_t


def distill_kl_backward(grad_kl, student, teacher, temperature, student_lse, teacher_lse, mask=None):
    """dL/dz = (softmax(z/T) - softmax(t/T)) / T · grad_kl[:, None], 0 on rows the mask leaves out."""
    op = "distill_kl_backward"
    student, teacher, temperature, mask = _checked(op, student, teacher, temperature, mask)
    rows = student.shape[0]
    grad_kl = np.ascontiguousarray(float_array(op, "grad_kl", grad_kl), dtype=student.dtype)
    student_lse = np.ascontiguousarray(float_array(op, "student_lse", student_lse), dtype=student.dtype)
    teacher_lse = np.ascontiguousarray(float_array(op, "teacher_lse", teacher_lse), dtype=student.dtype)
    if grad_kl.shape != (rows,) or student_lse.shape != (rows,) or teacher_lse.shape != (rows,):
        raise ValueError(f"{op}: grad_kl {grad_kl.shape}, student_lse {student_lse.shape} and teacher_lse "
                         f"{teacher_lse.shape} must all be ({rows},) for logits {student.shape}")
    grad = np.empty_like(student)
    _backward(grad_kl, student, teacher, temperature, student_lse, teacher_lse, mask, grad,
              threads_for(student.size))
    return grad
