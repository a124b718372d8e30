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
from tinylm.ops.cross_entropy import cross_entropy as _cross_entropy
from tinylm.random import default_generator

__all__ = [
    "linear", "embedding", "dropout", "layer_norm", "softmax", "log_softmax",
    "cross_entropy", "scaled_dot_product_attention", "attention_weights",
]


def linear(x, weight, bias=None):
    """y = x Wᵀ + b, with W of shape (out_features, in_features) as in PyTorch."""
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"linear: input {x.shape} has {x.shape[-1]} features, weight {weight.shape} expects {weight.shape[-1]}"
        )
    y = x @ weight.T
    return y + bias if bias is not None else y


def dropout(x, p: float = 0.5, training: bool = True, generator=None):
    """Zero each element with probability p and scale the survivors by 1/(1-p), so the
    expected value is unchanged; the identity when not training. The mask is a
    constant, so the backward is gy · mask / (1-p) through the graph's Mul."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    rng = generator or default_generator()
    keep = rng.random(x.shape) >= p  # drawn on the CPU so every backend sees the same mask
    scale = backends.to_device((keep / (1.0 - p)).astype(x.dtype), x.device)
    return x * Tensor(scale)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalise over the last ``len(normalized_shape)`` axes to mean 0 and variance 1
    (the biased variance, as PyTorch), then scale by ``weight`` and shift by ``bias``."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(normalized_shape):] != normalized_shape:
        raise ValueError(f"layer_norm: input {x.shape} does not end in normalized_shape {normalized_shape}")
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    centered = x - x.mean(axis=axes, keepdims=True)
    variance = (centered * centered).mean(axis=axes, keepdims=True)
    y = centered / (variance + eps).sqrt()
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean"):
    """PyTorch's ``F.cross_entropy`` for logits (N, C) with targets (N,), or logits
    (N, C, d1, ...) with targets (N, d1, ...): fused log-softmax + NLL."""
    if logits.ndim > 2:
        classes = logits.shape[1]
        moved = ops.permute(logits, 0, *range(2, logits.ndim), 1)  # (N, d1, ..., C)
        flat = moved.reshape(-1, classes)  # (N * d1 * ..., C)
        target_array = targets.data if isinstance(targets, Tensor) else targets
        loss = _cross_entropy(flat, target_array.reshape(-1), ignore_index, reduction)
        return loss.reshape(*target_array.shape) if reduction == "none" else loss
    return _cross_entropy(logits, targets, ignore_index, reduction)


def causal_mask(query_length: int, key_length: int, xp=np):
    """Bool (L, S), True where query i may attend to key j, i.e. j ≤ i (top-left aligned)."""
    return xp.tril(xp.ones((query_length, key_length), dtype=bool))


def attention_weights(query, key, attn_mask=None, is_causal: bool = False, scale=None):
    """softmax(Q Kᵀ · scale + mask) over the keys: (..., L, S), each row sums to 1.

    ``attn_mask``: a bool mask where True means *may attend* (PyTorch's SDPA
    convention), or a float mask added to the scores. ``is_causal`` lets query i see
    keys 0..i only. ``scale`` defaults to 1/√E.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"attention: query {query.shape} and key {key.shape} differ in their last axis")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.mT) * scale  # (..., L, S)
    xp = backends.get_array_module(scores.data)
    if is_causal:
        scores = ops.masked_fill(scores, ~causal_mask(query.shape[-2], key.shape[-2], xp), -np.inf)
    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
        if mask.dtype == bool:
            scores = ops.masked_fill(scores, ~mask, -np.inf)
        elif isinstance(attn_mask, Tensor):  # a float Tensor mask is an operand: it may learn
            scores = scores + attn_mask
        else:
            scores = scores + Tensor(xp.asarray(mask, dtype=scores.dtype))
    return softmax(scores, axis=-1)


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
