"""Causal scaled dot-product attention, reference versions: the oracle of the fused
(flash-attention style) CUDA kernel in ``kernels/cuda/causal_attention.cu``.

For one head (N = batch · heads independent ones), queries q, keys k, values v, each
(T, hs), and query i seeing keys j <= i:

    sᵢⱼ = scale · qᵢ · kⱼ                     (sᵢⱼ = -inf for j > i)
    ℓᵢ  = log Σⱼ e^sᵢⱼ                        (the log-sum-exp of row i)
    pᵢⱼ = e^(sᵢⱼ - ℓᵢ)                        (softmax over the keys)
    oᵢ  = Σⱼ pᵢⱼ vⱼ

The forward returns ℓ beside o: with it, a backward can rebuild any pᵢⱼ from qᵢ and
kⱼ alone, which is what lets a fused kernel avoid storing the (T, T) matrix p.

Backward, given g = dL/do (T, hs). o = p v is a matrix product, so

    dL/dv = pᵀ g,      dL/dp = g vᵀ.

Through the softmax (dpᵢⱼ/dsᵢₖ = pᵢⱼ(δⱼₖ - pᵢₖ)):

    dL/dsᵢⱼ = pᵢⱼ (dL/dpᵢⱼ - Σₖ pᵢₖ dL/dpᵢₖ)

and the inner sum is Σₖ pᵢₖ (gᵢ · vₖ) = gᵢ · Σₖ pᵢₖ vₖ = gᵢ · oᵢ: one dot product per
row from the forward's output, no (T, T) product needed (FlashAttention-2's Dᵢ).
Masked entries have p = 0, so they get no gradient. Finally s = scale · q kᵀ gives

    dL/dq = scale · (dL/ds) k,      dL/dk = scale · (dL/ds)ᵀ q.
"""

from __future__ import annotations

import numpy as np

from tinylm.backends import get_array_module


def check_qkv(op: str, q, k, v) -> None:
    """q, k, v must be (N, T, hs), one shape, one float dtype."""
    if q.ndim != 3 or tuple(k.shape) != tuple(q.shape) or tuple(v.shape) != tuple(q.shape):
        raise ValueError(f"{op}: q, k, v must be (N, T, hs) of one shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.dtype.kind != "f" or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"{op}: q, k, v must share one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def _causal_probs(q, k, scale: float, logsumexp=None):
    """p (N, T, T) and ℓ (N, T): the softmax of the scaled, causally masked scores."""
    xp = get_array_module(q)
    steps = q.shape[1]
    scores = (q @ k.transpose(0, 2, 1)) * q.dtype.type(scale)  # (N, T, T): sᵢⱼ
    visible = xp.tril(xp.ones((steps, steps), dtype=bool))  # j <= i
    scores = xp.where(visible, scores, -np.inf)
    if logsumexp is None:
        row_max = scores.max(axis=-1, keepdims=True)  # finite: key 0 is always visible
        logsumexp = (row_max + xp.log(xp.exp(scores - row_max).sum(axis=-1, keepdims=True)))[..., 0]
    return xp.exp(scores - logsumexp[..., None]), logsumexp


def causal_attention_forward(q, k, v, scale: float):
    """q, k, v (N, T, hs) -> (out (N, T, hs), logsumexp (N, T)), both in q's dtype."""
    check_qkv("causal_attention_forward", q, k, v)
    probs, logsumexp = _causal_probs(q, k, scale)
    return probs @ v, logsumexp.astype(q.dtype, copy=False)


def causal_attention_backward(grad_out, q, k, v, out, logsumexp, scale: float):
    """-> (dq, dk, dv), each (N, T, hs): see the module docstring for the derivation."""
    check_qkv("causal_attention_backward", q, k, v)
    if tuple(grad_out.shape) != tuple(q.shape) or tuple(out.shape) != tuple(q.shape):
        raise ValueError(f"causal_attention_backward: grad_out {tuple(grad_out.shape)} and out {tuple(out.shape)} "
                         f"must be (N, T, hs) = {tuple(q.shape)}")
    probs, _ = _causal_probs(q, k, scale, logsumexp)  # rebuilt from ℓ, as a fused kernel would
    grad_v = probs.transpose(0, 2, 1) @ grad_out  # pᵀ g
    grad_probs = grad_out @ v.transpose(0, 2, 1)  # g vᵀ, (N, T, T)
    inner = (grad_out * out).sum(axis=-1, keepdims=True)  # Dᵢ = gᵢ · oᵢ = Σₖ pᵢₖ dL/dpᵢₖ
    grad_scores = probs * (grad_probs - inner)
    scale = q.dtype.type(scale)
    return (grad_scores @ k) * scale, (grad_scores.transpose(0, 2, 1) @ q) * scale, grad_v
