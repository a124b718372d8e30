"""Cross-entropy: log-softmax and negative log-likelihood fused into one op."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function
from tinylm.backends import get_array_module
from tinylm.reference.cross_entropy import check_targets


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
        losses, logsumexp = backends.kernel("cross_entropy_forward")(logits, self.targets, self.ignore_index)
        self.count = int((self.targets != self.ignore_index).sum())
        self.save_for_backward(logits, logsumexp)
        if self.reduction == "none":
            return losses
        total = losses.sum()
        if self.reduction == "sum":
            return total
        # An all-ignored batch has no mean: nan, as in PyTorch (and zero gradients).
        return total / logits.dtype.type(self.count) if self.count else xp.asarray(xp.nan, dtype=logits.dtype)

    def backward(self, gy):
        logits, logsumexp = self.saved
        xp = get_array_module(logits)
        if self.reduction == "none":
            grad_losses = gy
        else:  # every row's loss gets the same share of the upstream gradient
            share = gy / gy.dtype.type(max(self.count, 1)) if self.reduction == "mean" else gy
            grad_losses = xp.full(logits.shape[0], share, dtype=logits.dtype)
        return backends.kernel("cross_entropy_backward")(grad_losses, logits, self.targets, logsumexp,
                                                         self.ignore_index)


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean"):
    """Fused log-softmax + NLL for logits (N, C) and integer targets (N,)."""
    from tinylm.autograd import Tensor

    targets = targets.data if isinstance(targets, Tensor) else targets
    if not hasattr(targets, "dtype"):  # a list of ints
        targets = backends.get_array_module(logits.data).asarray(targets)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    check_targets("cross_entropy", logits, targets, ignore_index)
    return CrossEntropy(targets, ignore_index, reduction)(logits)
