"""Attention softmax kernels, reference versions: scale, mask and softmax in one step.

For scores s (..., L, S) (query i, key j):

    pᵢⱼ = e^(zᵢⱼ - mᵢ) / Σₖ e^(zᵢₖ - mᵢ),   zᵢⱼ = scale · sᵢⱼ + maskᵢⱼ,   mᵢ = maxⱼ zᵢⱼ

``mask`` is additive (L, S) (0 to keep, -inf to drop, or any bias); ``causal`` drops
every key j > i; ``key_padding_mask``, a bool (B, S) array for scores (B, ..., L, S),
drops key j from every query row of batch row b where it is True (a padding key: PyTorch's
convention for ``MultiheadAttention``). A dropped key has zᵢⱼ = -inf, so pᵢⱼ = 0, whatever
its score (a NaN score at a dropped key is not seen). The three combine: a key is seen
only if none of them drops it. A row whose every key is dropped has no distribution: it gets
probabilities 0 (PyTorch returns NaN there), so one empty row cannot poison a batch.
A NaN score is never hidden: its row is NaN at every key not dropped (dropped keys,
-inf, stay 0).

Backward, as for any softmax (dpᵢ/dzⱼ = pᵢ(δᵢⱼ - pⱼ)), times the scale:

    dL/dsᵢⱼ = scale · pᵢⱼ (gᵢⱼ - Σₖ gᵢₖ pᵢₖ)

and masked entries, having p = 0, get gradient 0. That holds for every way of dropping a
key (-inf in ``mask``, causal, padding): a dropped key's z is the constant -inf, not a
function of its score, so its p is 0 for every score nearby and its score has no effect
on the loss; the formula agrees, pᵢⱼ = 0 making the whole product 0. The form of the
backward does not depend on how keys were dropped, so it takes no masks: the saved p
carries them.
"""

from __future__ import annotations

import numpy as np

from tinylm.backends import get_array_module


def check_attention_mask(op: str, scores, mask, key_padding_mask=None) -> None:
    """The masks' shapes against scores (..., L, S): ``mask`` (L, S); ``key_padding_mask``
    bool (B, S) for scores (B, ..., L, S). A ValueError (shapes) or TypeError (dtype) names
    ``op`` and the shapes; every version of the kernel checks with this one function."""
    if scores.ndim < 2:
        raise ValueError(f"{op}: scores must be (..., L, S), got shape {tuple(scores.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(scores.shape[-2:]):
        raise ValueError(f"{op}: mask {tuple(mask.shape)} must be (L, S) = {tuple(scores.shape[-2:])}")
    if key_padding_mask is None:
        return
    if scores.ndim < 3:
        raise ValueError(f"{op}: a key_padding_mask needs scores (B, ..., L, S) with a batch axis, "
                         f"got scores {tuple(scores.shape)}")
    expected = (scores.shape[0], scores.shape[-1])
    if tuple(key_padding_mask.shape) != expected:
        raise ValueError(f"{op}: key_padding_mask {tuple(key_padding_mask.shape)} must be (B, S) = {expected} "
                         f"for scores {tuple(scores.shape)}")
    if key_padding_mask.dtype != bool:
        raise TypeError(f"{op}: key_padding_mask must be a bool array (True = a padding key), "
                        f"got {key_padding_mask.dtype}")


def attention_softmax_forward(scores, scale: float, mask=None, causal: bool = False, key_padding_mask=None):
    """softmax over the last axis of scale · scores + mask, keys j > i dropped if causal,
    and keys j of batch row b dropped where key_padding_mask[b, j]."""
    check_attention_mask("attention_softmax_forward", scores, mask, key_padding_mask)
    xp = get_array_module(scores)
    z = scores * scores.dtype.type(scale)
    if mask is not None:
        z = z + mask.astype(scores.dtype, copy=False)
    if causal:
        length, keys = scores.shape[-2:]
        z = xp.where(xp.tril(xp.ones((length, keys), dtype=bool)), z, -np.inf)
    if key_padding_mask is not None:  # (B, S) -> (B, 1, ..., 1, S): the same keys for every head and query
        padding = xp.asarray(key_padding_mask).reshape(scores.shape[:1] + (1,) * (scores.ndim - 2) + scores.shape[-1:])
        z = xp.where(padding, -np.inf, z)
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
