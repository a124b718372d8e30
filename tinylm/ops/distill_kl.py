"""Knowledge distillation's soft loss: KL(teacher ‖ student) of both softmaxes at temperature T, fused."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function, Tensor
from tinylm.backends import get_array_module
from tinylm.reference.distill_kl import check_distill_kl


class DistillKL(Function):
    """Mean (or sum, or per-row) over the counted rows of

        klₙ = KL(pₙ ‖ qₙ) = Σᵥ pₙᵥ (log pₙᵥ - log qₙᵥ),   p = softmax(t / T),   q = softmax(z / T)

    for student logits z (N, V) (the op's one input) and teacher logits t (N, V) (a
    constant: the teacher is not trained). Hinton et al. (2015) train the student on
    (1 - α)·cross-entropy + α·T²·KL; the T² is the caller's (``tinylm.train``).

    Backward. p does not depend on z, and log qₙᵤ = zₙᵤ/T - log Σₖ e^(zₙₖ/T), so
    d log qₙᵤ / d zₙᵥ = ([u = v] - qₙᵥ) / T and

        d klₙ / d zₙᵥ = -Σᵤ pₙᵤ ([u = v] - qₙᵥ) / T = (qₙᵥ - pₙᵥ) / T        (Σᵤ pₙᵤ = 1)

    "student minus teacher", like cross-entropy's "probabilities minus one-hot" (which is
    this with a one-hot p and T = 1). For the mean each counted row's share of the
    upstream gradient is 1 / (counted rows); rows the mask leaves out get 0.

    No rows counted (an all-False mask, or N = 0): the loss is 0 and every gradient 0
    (a sum over no rows; cross-entropy returns NaN there, but a KL term that poisons the
    objective over a batch with nothing to distil would help no one).
    """

    def __init__(self, teacher, temperature: float, mask, reduction: str):
        self.teacher, self.temperature, self.mask, self.reduction = teacher, temperature, mask, reduction

    def forward(self, student):
        xp = get_array_module(student)
        kl, student_lse, teacher_lse = backends.kernel("distill_kl_forward")(student, self.teacher, self.temperature,
                                                                              self.mask)
        self.count = student.shape[0] if self.mask is None else int(self.mask.sum())
        self.save_for_backward(student, student_lse, teacher_lse)
        if self.reduction == "none":
            return kl
        total = kl.sum()
        if self.reduction == "sum" or self.count == 0:
            return xp.asarray(total, dtype=student.dtype)
        return total / student.dtype.type(self.count)

    def backward(self, gy):
        student, student_lse, teacher_lse = self.saved
        xp = get_array_module(student)
        if self.reduction == "none":
            grad_kl = gy
        else:  # every counted row gets the same share of the upstream gradient
            share = gy / gy.dtype.type(max(self.count, 1)) if self.reduction == "mean" else gy
            grad_kl = xp.full(student.shape[0], share, dtype=student.dtype)
        return backends.kernel("distill_kl_backward")(grad_kl, student, self.teacher, self.temperature, student_lse,
                                                      teacher_lse, self.mask)


def distill_kl(student_logits: Tensor, teacher_logits, temperature: float, mask=None, reduction: str = "mean"):
    """KL(softmax(teacher/T) ‖ softmax(student/T)) per row of student logits (..., V),
    averaged over the rows where ``mask`` (bool, shape (...)) is True (all rows if None).

    ``teacher_logits`` (..., V), an array or a Tensor, is a constant: no gradient reaches
    it. ``reduction``: "mean" (default; 0 when no row counts), "sum", or "none" (the
    per-row KL, shape (...), 0 on rows left out). Equal to PyTorch's
    ``F.kl_div(F.log_softmax(z / T, -1), F.softmax(t / T, -1), reduction="batchmean")``
    over the counted rows.
    """
    op = "distill_kl"
    if not isinstance(student_logits, Tensor):
        raise TypeError(f"{op}: student_logits must be a Tensor, got {type(student_logits).__name__}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    xp = get_array_module(student_logits.data)
    teacher = teacher_logits.data if isinstance(teacher_logits, Tensor) else xp.asarray(teacher_logits)
    shape = tuple(student_logits.shape)
    if len(shape) < 1 or tuple(teacher.shape) != shape:
        raise ValueError(f"{op}: student logits {shape} and teacher logits {tuple(teacher.shape)} must be one shape "
                         "(..., V)")
    if shape[-1] == 0:
        raise ValueError(f"{op}: logits {shape} have no classes")
    rows = shape[:-1]
    if mask is not None:
        mask = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
        if tuple(mask.shape) != rows:
            raise ValueError(f"{op}: mask {tuple(mask.shape)} must be the logits' shape without V, {rows}")
        mask = mask.reshape(-1)
    flat = student_logits.reshape(-1, shape[-1])  # (N, V), N = the product of the leading sizes
    teacher = teacher.reshape(-1, shape[-1]).astype(flat.dtype, copy=False)  # the student's dtype
    check_distill_kl(op, flat, teacher, temperature, mask)
    kl = DistillKL(teacher, float(temperature), mask, reduction)(flat)
    return kl.reshape(rows) if reduction == "none" else kl
