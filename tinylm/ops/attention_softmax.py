"""Scale, mask and softmax of attention scores as one op (kernels and derivation in
``tinylm/reference/attention_softmax.py``)."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function


class AttentionSoftmax(Function):
    """p = softmax(scale · s + mask) over the keys, causal keys j > i dropped.

    dL/ds = scale · p ⊙ (g - Σ g p) row by row, from the softmax Jacobian
    pᵢ(δᵢⱼ - pⱼ); the mask is a constant, so only the scores get a gradient.
    """

    def __init__(self, scale: float, mask, causal: bool):
        self.scale, self.mask, self.causal = scale, mask, causal

    def forward(self, scores):
        probs = backends.kernel("attention_softmax_forward")(scores, self.scale, self.mask, self.causal)
        self.save_for_backward(probs)
        return probs

    def backward(self, gy):
        (probs,) = self.saved
        return backends.kernel("attention_softmax_backward")(gy, probs, self.scale)


def attention_softmax(scores, scale: float = 1.0, mask=None, causal: bool = False):
    """scores (..., L, S) -> probabilities over S; ``mask`` an additive (L, S) array
    (0 keeps, -inf drops). Rows with every key dropped come out all 0, not NaN."""
    from tinylm.autograd import Tensor

    if isinstance(mask, Tensor):  # the mask is a constant here: no gradient can flow to it
        if mask.requires_grad:
            raise ValueError("attention_softmax: mask is a constant; add a learned mask to the scores instead")
        mask = mask.data
    if scores.ndim < 2:
        raise ValueError(f"attention_softmax: scores must be (..., L, S), got shape {scores.shape}")
    if mask is not None and tuple(mask.shape) != scores.shape[-2:]:
        raise ValueError(f"attention_softmax: mask {tuple(mask.shape)} must be (L, S) = {scores.shape[-2:]}")
    return AttentionSoftmax(float(scale), mask, bool(causal))(scores)
