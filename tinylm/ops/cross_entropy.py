"""Cross-entropy: log-softmax and negative log-likelihood fused into one op."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function
from tinylm.backends import get_array_module


class CrossEntropy(Function):
    """Mean (or sum, or per-row) of lossₙ = -log softmax(xₙ)[tₙ] for logits x of shape
    (N, C) and integer targets t of shape (N,); rows whose target is ``ignore_index``
    count for nothing.

    Written out, lossₙ = log Σⱼ e^xₙⱼ - xₙₜₙ, so

        d lossₙ / d xₙⱼ = e^xₙⱼ / Σₖ e^xₙₖ - [j = tₙ] = softmax(xₙ)ⱼ - onehot(tₙ)ⱼ

    the famous "probabilities minus one-hot". Doing both in one op skips the (N, C)
    log-probabilities a separate log_softmax and gather would keep, and the shift by
    the row maximum keeps logits of ±1e4 finite.
    """

    def __init__(self, targets, ignore_index: int, reduction: str):
        self.targets, self.ignore_index, self.reduction = targets, ignore_index, reduction

    def forward(self, logits):
        xp = get_array_module(logits)
        rows = xp.arange(logits.shape[0])
        valid = self.targets != self.ignore_index  # (N,)
        safe_targets = xp.where(valid, self.targets, 0)  # any in-range class for ignored rows
        shifted = logits - logits.max(axis=1, keepdims=True)  # (N, C), each row's max is 0
        log_normalizer = xp.log(xp.exp(shifted).sum(axis=1))  # (N,)
        losses = (log_normalizer - shifted[rows, safe_targets]) * valid
        self.count = int(valid.sum())
        self.save_for_backward(shifted, log_normalizer, safe_targets, valid)
        if self.reduction == "none":
            return losses
        total = losses.sum()
        if self.reduction == "sum":
            return total
        # An all-ignored batch has no mean: nan, as in PyTorch (and zero gradients).
        return total / logits.dtype.type(self.count) if self.count else xp.asarray(xp.nan, dtype=logits.dtype)

    def backward(self, gy):
        shifted, log_normalizer, safe_targets, valid = self.saved
        xp = get_array_module(shifted)
        grad = xp.exp(shifted - log_normalizer[:, None])  # softmax, (N, C)
        grad[xp.arange(grad.shape[0]), safe_targets] -= 1  # minus one-hot
        grad *= valid[:, None]
        if self.reduction == "none":
            return grad * gy[:, None]
        scale = gy / gy.dtype.type(max(self.count, 1)) if self.reduction == "mean" else gy
        return grad * scale


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean"):
    """Fused log-softmax + NLL for logits (N, C) and integer targets (N,)."""
    from tinylm.autograd import Tensor

    targets = targets.data if isinstance(targets, Tensor) else targets
    if not hasattr(targets, "dtype"):  # a list of ints
        targets = backends.get_array_module(logits.data).asarray(targets)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if logits.ndim != 2 or tuple(targets.shape) != logits.shape[:1]:
        raise ValueError(
            f"cross_entropy: logits must be (N, C) and targets (N,), got {logits.shape} and {tuple(targets.shape)}"
        )
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got {targets.dtype}")
    classes = logits.shape[1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= classes))
    if bool(bad.any()):
        value = int(targets[bad][0])
        raise IndexError(f"cross_entropy: target {value} is out of range for {classes} classes (ignore_index={ignore_index})")
    return CrossEntropy(targets, ignore_index, reduction)(logits)
