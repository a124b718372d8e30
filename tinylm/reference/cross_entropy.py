"""Cross-entropy kernels, reference versions: log-softmax and NLL fused, per row.

For logits x (N, C) and targets t (N,):

    lossₙ = log Σⱼ e^xₙⱼ - xₙₜₙ = lseₙ - xₙₜₙ
    d lossₙ / d xₙⱼ = e^(xₙⱼ - lseₙ) - [j = tₙ] = softmax(xₙ)ⱼ - onehot(tₙ)ⱼ

The forward keeps only the log-sum-exp per row (N numbers), and the backward rebuilds
the softmax from it: no (N, C) probabilities are stored between the two. Rows whose
target is ``ignore_index`` get loss 0 and gradient 0.
"""

from __future__ import annotations

from tinylm.backends import get_array_module


def check_targets(op: str, logits, targets, ignore_index: int) -> None:
    """Logits (N, C) and integer targets (N,) in [0, C) or equal to ``ignore_index``."""
    if logits.ndim != 2 or tuple(targets.shape) != tuple(logits.shape[:1]):
        raise ValueError(f"{op}: logits must be (N, C) and targets (N,), "
                         f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be integers, got {targets.dtype}")
    classes = logits.shape[1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= classes))
    if bool(bad.any()):
        value = int(targets[bad][0])
        raise IndexError(f"{op}: target {value} is out of range for {classes} classes (ignore_index={ignore_index})")


def cross_entropy_forward(logits, targets, ignore_index: int):
    """-> (losses (N,), logsumexp (N,)), both in the logits' dtype; 0 loss on ignored rows."""
    check_targets("cross_entropy_forward", logits, targets, ignore_index)
    xp = get_array_module(logits)
    valid = targets != ignore_index  # (N,)
    safe_targets = xp.where(valid, targets, 0)  # any in-range class for ignored rows
    row_max = logits.max(axis=1)  # (N,); shifting by it keeps e^x finite for x = 1e4
    logsumexp = row_max + xp.log(xp.exp(logits - row_max[:, None]).sum(axis=1))
    picked = logits[xp.arange(logits.shape[0]), safe_targets]  # (N,) the target's logit
    losses = xp.where(valid, logsumexp - picked, 0).astype(logits.dtype, copy=False)
    return losses, logsumexp.astype(logits.dtype, copy=False)


def cross_entropy_backward(grad_losses, logits, targets, logsumexp, ignore_index: int):
    """dL/dlogits = (softmax - onehot) · dL/dlossₙ per row, 0 on ignored rows."""
    xp = get_array_module(logits)
    valid = targets != ignore_index
    grad = xp.exp(logits - logsumexp[:, None])  # softmax, (N, C)
    grad[xp.arange(grad.shape[0]), xp.where(valid, targets, 0)] -= 1  # minus one-hot
    grad *= xp.where(valid, grad_losses, 0).astype(grad.dtype, copy=False)[:, None]
    return grad
