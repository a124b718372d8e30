"""Attention softmax kernels, reference versions: scale, mask and softmax in one step.

For scores s (..., L, S) (query i, key j):

    pᵢⱼ = e^(zᵢⱼ - mᵢ) / Σₖ e^(zᵢₖ - mᵢ),   zᵢⱼ = scale · sᵢⱼ + maskᵢⱼ,   mᵢ = maxⱼ zᵢⱼ

``mask`` is additive (L, S) (0 to keep, -inf to drop, or any bias); ``causal`` drops
every key j > i. A row whose every key is dropped has no distribution: it gets
probabilities 0 (PyTorch returns NaN there), so one empty row cannot poison a batch.
A NaN score is never hidden: its row is NaN at every key not dropped (dropped keys,
-inf, stay 0).

Backward, as for any softmax (dpᵢ/dzⱼ = pᵢ(δᵢⱼ - pⱼ)), times the scale:

    dL/dsᵢⱼ = scale · pᵢⱼ (gᵢⱼ - Σₖ gᵢₖ pᵢₖ)

and masked entries, having p = 0, get gradient 0.
"""

from __future__ import annotations

import numpy as np

from tinylm.backends import get_array_module


def check_attention_mask(op: str, scores, mask) -> None:
    if scores.ndim < 2:
        raise ValueError(f"{op}: scores must be (..., L, S), got shape {tuple(scores.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(scores.shape[-2:]):
        raise ValueError(f"{op}: mask {tuple(mask.shape)} must be (L, S) = {tuple(scores.shape[-2:])}")


def attention_softmax_forward(scores, scale: float, mask=None, causal: bool = False):
    """softmax over the last axis of scale · scores + mask, keys j > i dropped if causal."""
    check_attention_mask("attention_softmax_forward", scores, mask)
    xp = get_array_module(scores)
    z = scores * scores.dtype.type(scale)
    if mask is not None:
        z = z + mask.astype(scores.dtype, copy=False)
    if causal:
        length, keys = scores.shape[-2:]
        z = xp.where(xp.tril(xp.ones((length, keys), dtype=bool)), z, -np.inf)
    nan_rows = xp.isnan(z).any(axis=-1, keepdims=True)
    z_clean = xp.where(xp.isnan(z), -np.inf, z)  # a NaN row is overwritten below
    row_max = z_clean.max(axis=-1, keepdims=True)
    row_max = xp.where(row_max == -np.inf, 0, row_max)  # an all -inf row: e^-inf = 0 below
    e = xp.exp(z_clean - row_max)
    total = e.sum(axis=-1, keepdims=True)
    probs = e / xp.where(total == 0, 1, total)  # an all-dropped row stays 0
    return xp.where(nan_rows & (z != -np.inf), np.nan, probs).astype(scores.dtype, copy=False)


def attention_softmax_backward(grad_probs, probs, scale: float):
    """dL/dscores = scale · p ⊙ (g - Σ g p) row by row."""
    inner = (grad_probs * probs).sum(axis=-1, keepdims=True)
    return probs * (grad_probs - inner) * probs.dtype.type(scale)
