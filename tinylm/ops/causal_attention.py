"""Causal scaled dot-product attention as one op (kernels and derivation in
``tinylm/reference/causal_attention.py``)."""

from __future__ import annotations

import math

from tinylm import backends
from tinylm.autograd import Function


class CausalAttention(Function):
    """out = softmax(scale · q kᵀ, keys j <= i) v for each of N heads, q, k, v (N, T, hs).

    One node instead of four (q kᵀ, the masked softmax, its (N, T, T) probabilities, p v):
    the forward keeps only each row's log-sum-exp ℓ, and the backward rebuilds
    p = e^(scale · q kᵀ - ℓ) from it, then

        dv = pᵀ g,   ds = p ⊙ (g vᵀ - rowsum(g ⊙ out)),   dq = scale · ds k,   dk = scale · dsᵀ q.
    """

    def __init__(self, scale: float):
        self.scale = scale

    def forward(self, q, k, v):
        out, logsumexp = backends.kernel("causal_attention_forward")(q, k, v, self.scale)
        self.save_for_backward(q, k, v, out, logsumexp)
        return out

    def backward(self, grad_out):
        q, k, v, out, logsumexp = self.saved
        return backends.kernel("causal_attention_backward")(grad_out, q, k, v, out, logsumexp, self.scale)


def causal_attention(q, k, v, scale: float | None = None):
    """q, k, v (..., T, hs) -> (..., T, hs); every leading axis is a separate head.
    ``scale`` defaults to 1/√hs."""
    if q.ndim < 2 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"causal_attention: q, k, v must share one shape (..., T, hs), got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    steps, size = q.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(size) if scale is None else float(scale)
    heads = math.prod(q.shape[:-2])
    flat = [x.reshape(heads, steps, size) for x in (q, k, v)]  # (N, T, hs)
    return CausalAttention(scale)(*flat).reshape(*q.shape)
