"""Scale, mask and softmax of attention scores as one op (kernels and derivation in
``tinylm/reference/attention_softmax.py``)."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function


class AttentionSoftmax(Function):
    """p = softmax(scale · s + mask) over the keys; causal keys j > i and the padding keys
    of each batch row (key_padding_mask) dropped.

    dL/ds = scale · p ⊙ (g - Σ g p) row by row, from the softmax Jacobian
    pᵢ(δᵢⱼ - pⱼ); the masks are constants, so only the scores get a gradient. A dropped
    key (-inf in the mask, causal or padding) has p = 0 whatever its score, so its score
    gets gradient 0, which the formula gives too: the backward needs no mask.
    """

    def __init__(self, scale: float, mask, causal: bool, key_padding_mask=None):
        self.scale, self.mask, self.causal, self.key_padding_mask = scale, mask, causal, key_padding_mask

    def forward(self, scores):
        probs = backends.kernel("attention_softmax_forward")(scores, self.scale, self.mask, self.causal,
                                                             self.key_padding_mask)
        self.save_for_backward(probs)
        return probs

    def backward(self, gy):
        (probs,) = self.saved
        return backends.kernel("attention_softmax_backward")(gy, probs, self.scale)


def _constant(name: str, mask):
    """A mask as an array: a Tensor's data, refused if it asks for a gradient."""
    from tinylm.autograd import Tensor

    if isinstance(mask, Tensor):  # the mask is a constant here: no gradient can flow to it
        if mask.requires_grad:
            raise ValueError(f"attention_softmax: {name} is a constant; add a learned mask to the scores instead")
        mask = mask.data
    return mask


def attention_softmax(scores, scale: float = 1.0, mask=None, causal: bool = False, key_padding_mask=None):
    """scores (..., L, S) -> probabilities over S; ``mask`` an additive (L, S) array
    (0 keeps, -inf drops); ``causal`` drops keys j > i; ``key_padding_mask`` a bool
    (B, S) array for scores (B, ..., L, S), True = a padding key that no query of batch
    row b may attend to (PyTorch's ``MultiheadAttention`` convention). Rows with every
    key dropped come out all 0, not NaN."""
    mask, key_padding_mask = _constant("mask", mask), _constant("key_padding_mask", key_padding_mask)
    if scores.ndim < 2:
        raise ValueError(f"attention_softmax: scores must be (..., L, S), got shape {scores.shape}")
    if mask is not None and tuple(mask.shape) != scores.shape[-2:]:
        raise ValueError(f"attention_softmax: mask {tuple(mask.shape)} must be (L, S) = {scores.shape[-2:]}")
    if key_padding_mask is not None:
        xp = backends.get_array_module(scores.data)
        key_padding_mask = xp.asarray(key_padding_mask)  # a list, or a NumPy mask for CuPy scores: small
        if scores.ndim < 3 or tuple(key_padding_mask.shape) != (scores.shape[0], scores.shape[-1]):
            raise ValueError(f"attention_softmax: key_padding_mask {tuple(key_padding_mask.shape)} must be (B, S) "
                             f"for scores (B, ..., L, S) = {scores.shape}")
        if key_padding_mask.dtype != bool:
            raise TypeError(f"attention_softmax: key_padding_mask must be bool (True = a padding key), got "
                            f"{key_padding_mask.dtype}; add a float mask to the scores instead")
    return AttentionSoftmax(float(scale), mask, bool(causal), key_padding_mask)(scores)
