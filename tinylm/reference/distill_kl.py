"""Distillation KL kernels, reference versions: both softmaxes at temperature T and their KL, per row.

For student logits z (N, V), teacher logits t (N, V) and a temperature T > 0:

    p = softmax(t / T)                the teacher's softened distribution
    q = softmax(z / T)                the student's
    klₙ = Σᵥ pₙᵥ (log pₙᵥ - log qₙᵥ)  KL(pₙ ‖ qₙ) ≥ 0

Each log-softmax subtracts its row's maximum before e^x (``log p = t/T - lse(t/T)``), so
logits of ±1e4 stay finite; a term with pₙᵥ = 0 (a teacher logit of -inf, or one so far
below the rest that e^x underflows) contributes 0, as the limit p log p → 0 says, rather
than 0 · (-inf) = NaN.

Backward: log qₙᵥ = zₙᵥ/T - lse(zₙ/T) and p does not depend on z, so

    d klₙ / d zₙᵥ = -Σᵤ pₙᵤ d log qₙᵤ / d zₙᵥ = -Σᵤ pₙᵤ ([u = v] - qₙᵥ) / T = (qₙᵥ - pₙᵥ) / T

(using Σᵤ pₙᵤ = 1). The forward keeps the two log-sum-exps per row (2N numbers) and the
backward rebuilds p and q from them: no (N, V) arrays are stored between the two.

``mask`` (N,) bool says which rows count (True); the others get kl 0 and gradient 0.
"""

from __future__ import annotations

import math
import numbers

from tinylm.backends import get_array_module


def check_distill_kl(op: str, student, teacher, temperature, mask=None) -> None:
    """Student and teacher logits (N, V) of one shape and float dtype, V >= 1, a finite
    temperature > 0 and a bool mask (N,): a one-line error naming ``op`` otherwise."""
    if student.ndim != 2 or tuple(teacher.shape) != tuple(student.shape):
        raise ValueError(f"{op}: student and teacher logits must both be (N, V), "
                         f"got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if student.shape[1] == 0:
        raise ValueError(f"{op}: logits {tuple(student.shape)} have no classes")
    if student.dtype.kind != "f" or teacher.dtype != student.dtype:
        raise TypeError(f"{op}: student and teacher logits must be floats of one dtype, "
                        f"got {student.dtype} and {teacher.dtype}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{op}: temperature must be a finite number > 0, got {temperature!r}")
    if mask is not None:
        if tuple(mask.shape) != tuple(student.shape[:1]):
            raise ValueError(f"{op}: mask {tuple(mask.shape)} must be (N,) = {tuple(student.shape[:1])} "
                             f"for logits {tuple(student.shape)}")
        if mask.dtype != bool:
            raise TypeError(f"{op}: mask must be a bool array (True = a row that counts), got {mask.dtype}")


def _log_softmax(x, temperature: float):
    """(log softmax(x / T) (N, V), lse (N,)) with the row maximum subtracted first."""
    xp = get_array_module(x)
    scaled = x / x.dtype.type(temperature)
    row_max = scaled.max(axis=1)  # (N,)
    lse = row_max + xp.log(xp.exp(scaled - row_max[:, None]).sum(axis=1))
    return scaled - lse[:, None], lse


def distill_kl_forward(student, teacher, temperature: float, mask=None):
    """-> (kl (N,), student_lse (N,), teacher_lse (N,)) in the logits' dtype, where
    lse = log Σᵥ e^(xᵥ/T) of each row; kl 0 on rows the mask leaves out."""
    check_distill_kl("distill_kl_forward", student, teacher, temperature, mask)
    xp = get_array_module(student)
    log_q, student_lse = _log_softmax(student, temperature)  # (N, V), (N,)
    log_p, teacher_lse = _log_softmax(teacher, temperature)
    p = xp.exp(log_p)
    kl = (p * xp.where(p > 0, log_p - log_q, 0)).sum(axis=1)  # a term with p = 0 adds 0
    if mask is not None:
        kl = xp.where(mask, kl, 0)
    return kl.astype(student.dtype, copy=False), student_lse, teacher_lse


def distill_kl_backward(grad_kl, student, teacher, temperature: float, student_lse, teacher_lse, mask=None):
    """dL/dz = (softmax(z/T) - softmax(t/T)) / T · dL/dklₙ per row, 0 on rows the mask leaves out."""
    check_distill_kl("distill_kl_backward", student, teacher, temperature, mask)
    xp = get_array_module(student)
    rows = student.shape[0]
    if tuple(grad_kl.shape) != (rows,) or tuple(student_lse.shape) != (rows,) or tuple(teacher_lse.shape) != (rows,):
        raise ValueError(f"distill_kl_backward: grad_kl {tuple(grad_kl.shape)}, student_lse "
                         f"{tuple(student_lse.shape)} and teacher_lse {tuple(teacher_lse.shape)} must all be "
                         f"({rows},) for logits {tuple(student.shape)}")
    t = student.dtype.type(temperature)
    q = xp.exp(student / t - student_lse[:, None])  # (N, V)
    p = xp.exp(teacher / t - teacher_lse[:, None])
    scale = grad_kl / t if mask is None else xp.where(mask, grad_kl / t, 0)  # (N,)
    return ((q - p) * scale.astype(student.dtype, copy=False)[:, None]).astype(student.dtype, copy=False)
