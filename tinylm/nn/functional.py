"""``tinylm.nn.functional`` (imported as ``F``): the layers' maths as plain functions.

Each is written on the engine's ops, so its backward comes from the graph; the one
exception is ``cross_entropy``, a fused op (see ``tinylm/ops/cross_entropy.py``).
"""

from __future__ import annotations

import math

import numpy as np

from tinylm import backends, ops
from tinylm.autograd import Tensor
from tinylm.ops import embedding, log_softmax, softmax
from tinylm.ops.attention_softmax import attention_softmax
from tinylm.ops.cross_entropy import cross_entropy as _cross_entropy
from tinylm.ops.dropout import dropout
from tinylm.ops.layer_norm import layer_norm
from tinylm.ops.linear import Linear

__all__ = [
    "linear", "embedding", "dropout", "layer_norm", "softmax", "log_softmax",
    "cross_entropy", "scaled_dot_product_attention", "attention_weights",
]


def linear(x, weight, bias=None):
    """y = x Wᵀ + b, with W of shape (out_features, in_features) as in PyTorch: one fused
    op (``tinylm/ops/linear.py``)."""
    if x.shape[-1] != weight.shape[-1] or weight.ndim != 2:
        raise ValueError(
            f"linear: input {x.shape} has {x.shape[-1]} features, weight {weight.shape} expects {weight.shape[-1]}"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"linear: bias {bias.shape} must be (out_features,) = {weight.shape[:1]}")
    operands = (x, weight) if bias is None else (x, weight, bias)
    if len({t.dtype for t in operands}) > 1:
        raise TypeError(f"linear: input {x.dtype}, weight {weight.dtype}"
                        + (f" and bias {bias.dtype}" if bias is not None else "") + " must share one dtype")
    return Linear()(*operands)


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean"):
    """PyTorch's ``F.cross_entropy`` for logits (N, C) with targets (N,), or logits
    (N, C, d1, ...) with targets (N, d1, ...): fused log-softmax + NLL."""
    if logits.ndim > 2:
        classes = logits.shape[1]
        moved = ops.permute(logits, 0, *range(2, logits.ndim), 1)  # (N, d1, ..., C)
        flat = moved.reshape(-1, classes)  # (N * d1 * ..., C)
        target_array = targets.data if isinstance(targets, Tensor) else targets
        if not hasattr(target_array, "dtype"):  # a list of ints
            target_array = backends.get_array_module(logits.data).asarray(target_array)
        expected = (logits.shape[0],) + tuple(logits.shape[2:])
        if tuple(target_array.shape) != expected:  # same size, other shape: would pair rows wrongly
            raise ValueError(f"cross_entropy: targets {tuple(target_array.shape)} must be (N, d1, ...) = {expected} "
                             f"for logits {tuple(logits.shape)}")
        loss = _cross_entropy(flat, target_array.reshape(-1), ignore_index, reduction)
        return loss.reshape(*target_array.shape) if reduction == "none" else loss
    return _cross_entropy(logits, targets, ignore_index, reduction)


def attention_weights(query, key, attn_mask=None, is_causal: bool = False, scale=None):
    """softmax(Q Kᵀ · scale + mask) over the keys: (..., L, S), each row sums to 1.

    ``attn_mask``: a bool mask where True means *may attend* (PyTorch's SDPA
    convention), or a float mask added to the scores. ``is_causal`` lets query i see
    keys 0..i only. ``scale`` defaults to 1/√E. Scaling, masking and the softmax are
    one fused op (``attention_softmax``), which takes an (L, S) mask; a mask broadcast
    over batch or heads, or a float Tensor mask that learns, is added to the scores
    through the graph instead. A row with every key masked comes out all 0.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"attention: query {query.shape} and key {key.shape} differ in their last axis")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.mT  # (..., L, S)
    if attn_mask is None:
        return attention_softmax(scores, scale, None, is_causal)
    xp = backends.get_array_module(scores.data)
    if isinstance(attn_mask, Tensor) and attn_mask.requires_grad:
        return attention_softmax(scores * scale + attn_mask, 1.0, None, is_causal)
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else xp.asarray(attn_mask)
    if mask.dtype == bool:
        mask = xp.where(mask, 0.0, -np.inf)  # additive: 0 keeps, -inf drops
    mask = mask.astype(scores.dtype, copy=False)
    if mask.shape != scores.shape[-2:]:  # broadcast over batch or heads: add it through the graph
        return attention_softmax(scores * scale + Tensor(mask), 1.0, None, is_causal)
    return attention_softmax(scores, scale, mask, is_causal)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale=None, generator=None):
    """softmax(Q Kᵀ · scale + mask) V, as PyTorch's ``F.scaled_dot_product_attention``.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); the mask
    conventions are those of ``attention_weights``.
    """
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: key {key.shape} and value {value.shape} differ in length")
    weights = attention_weights(query, key, attn_mask, is_causal, scale)  # (..., L, S)
    return dropout(weights, dropout_p, training=dropout_p > 0.0, generator=generator) @ value
