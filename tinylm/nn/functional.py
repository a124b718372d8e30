"""``tinylm.nn.functional`` (imported as ``F``): the layers' maths as plain functions.

Each is written on the engine's ops, so its backward comes from the graph; the
exceptions are fused ops: ``cross_entropy`` without class weights or label smoothing
(see ``tinylm/ops/cross_entropy.py``), ``gelu`` (``tinylm/ops/gelu.py``) and ``relu``.
"""

from __future__ import annotations

import math

import numpy as np

from tinylm import backends, ops
from tinylm.autograd import Tensor
from tinylm.ops import log_softmax, softmax
from tinylm.ops.attention_softmax import attention_softmax
from tinylm.ops.cross_entropy import cross_entropy as _cross_entropy
from tinylm.ops.dropout import dropout
from tinylm.ops.elementwise import relu
from tinylm.ops.embedding import embedding as _embedding
from tinylm.ops.gelu import gelu as _gelu
from tinylm.ops.layer_norm import layer_norm
from tinylm.ops.linear import Linear
from tinylm.ops.padded_embedding import PaddedEmbedding
from tinylm.reference.cross_entropy import check_targets
from tinylm.reference.embedding import check_ids

__all__ = [
    "linear", "embedding", "dropout", "layer_norm", "softmax", "log_softmax", "relu", "gelu",
    "cross_entropy", "nll_loss", "mse_loss", "scaled_dot_product_attention", "attention_weights",
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


def _is_torch_tensor(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def embedding(ids, weight, padding_idx=None):
    """Look up rows of ``weight`` (V, D) at integer ``ids``: (*ids.shape, D), PyTorch's
    ``F.embedding(input, weight, padding_idx)``. Row ``padding_idx`` gets no gradient."""
    if _is_torch_tensor(ids):
        raise TypeError(f"embedding: ids are a torch tensor ({ids.dtype}); tinylm takes NumPy arrays or "
                        f"tinylm Tensors: convert with ids.numpy()")
    if padding_idx is None:
        return _embedding(ids, weight)
    ids_array = ids.data if isinstance(ids, Tensor) else ids
    if not hasattr(ids_array, "dtype"):  # a list of ints
        ids_array = backends.get_array_module(weight.data).asarray(ids_array)
    check_ids("embedding", ids_array, weight.shape[0])
    return PaddedEmbedding(ids_array, padding_idx % weight.shape[0])(weight)


def gelu(x, approximate: str = "none"):
    """GELU, PyTorch's ``F.gelu``: exact, x Φ(x), by default; ``approximate='tanh'`` for
    GPT-2's approximation (see ``tinylm/ops/gelu.py`` for both and their derivatives)."""
    return _gelu(x, approximate)


def _target_array(targets, like):
    array = targets.data if isinstance(targets, Tensor) else targets
    return array if hasattr(array, "dtype") else backends.get_array_module(like.data).asarray(array)


def _classes_last(name: str, scores, targets):
    """Scores (N, C, d1, ...) with targets (N, d1, ...) -> (N·d1·..., C) and (N·d1·...,):
    PyTorch's layout for the losses over classes, flattened to one row per target."""
    targets = _target_array(targets, scores)
    if scores.ndim <= 2:
        return scores, targets
    expected = (scores.shape[0],) + tuple(scores.shape[2:])
    if tuple(targets.shape) != expected:  # same size, other shape: would pair rows wrongly
        raise ValueError(f"{name}: targets {tuple(targets.shape)} must be (N, d1, ...) = {expected} "
                         f"for input {tuple(scores.shape)}")
    moved = ops.permute(scores, 0, *range(2, scores.ndim), 1)  # (N, d1, ..., C)
    return moved.reshape(-1, scores.shape[1]), targets.reshape(-1)


def _class_weights(name: str, weight, scores):
    """The (C,) class weights as an array in the scores' dtype (ones when None)."""
    xp = backends.get_array_module(scores.data)
    if weight is None:
        return xp.ones(scores.shape[-1], dtype=scores.dtype)
    array = weight.data if isinstance(weight, Tensor) else xp.asarray(weight)
    if tuple(array.shape) != (scores.shape[-1],):
        raise ValueError(f"{name}: weight {tuple(array.shape)} must have one entry per class, ({scores.shape[-1]},)")
    if array.dtype != scores.dtype:
        raise TypeError(f"{name}: weight is {array.dtype} but the input is {scores.dtype}; convert one of them")
    return array


def _reduce(name: str, losses, reduction: str, denominator):
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.sum() / denominator
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(log_probs, targets, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """PyTorch's ``F.nll_loss``: lossₙ = -w[tₙ] · log_probs[n, tₙ], for log-probabilities
    (N, C) or (N, C, d1, ...). ``mean`` divides by Σₙ w[tₙ], the weight of the targets
    not equal to ``ignore_index`` (ignored rows count for nothing).

    Picking log_probs[n, tₙ] is a product with a weighted one-hot, W[n, c] = w[c] [c = tₙ],
    so the gradient is -W[n, c] (divided by Σₙ w[tₙ] for the mean)."""
    flat, flat_targets = _classes_last("nll_loss", log_probs, targets)
    check_targets("nll_loss", flat, flat_targets, ignore_index)
    xp = backends.get_array_module(flat.data)
    class_weights = _class_weights("nll_loss", weight, flat)
    valid = flat_targets != ignore_index  # (N,)
    one_hot = xp.arange(flat.shape[1]) == xp.where(valid, flat_targets, -1)[:, None]  # (N, C), all 0 when ignored
    weighted = (one_hot * class_weights).astype(flat.dtype)  # W[n, c] = w[c] [c = tₙ]
    losses = -(flat * Tensor(weighted)).sum(axis=1)  # (N,)
    if reduction == "none" and log_probs.ndim > 2:
        return losses.reshape(*_target_array(targets, log_probs).shape)
    return _reduce("nll_loss", losses, reduction, Tensor(weighted.sum()))


def cross_entropy(logits, targets, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0):
    """PyTorch's ``F.cross_entropy`` for logits (N, C) with targets (N,), or logits
    (N, C, d1, ...) with targets (N, d1, ...): log-softmax + NLL.

    Without ``weight`` and ``label_smoothing`` it is one fused op. Otherwise it is written
    out as PyTorch does: with ε = label_smoothing, each target is the mixture of its
    one-hot (weight 1 - ε) and the uniform distribution over the C classes (weight ε):

        loss = (1 - ε) · nll_loss(log p, t, w) + ε / C · smooth,   smoothₙ = -Σ_c w[c] log p[n, c]

    ``smooth`` is summed over non-ignored rows and, for the mean, divided by what
    nll_loss divides by (Σₙ w[tₙ], or the count of rows without weights)."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if isinstance(weight, (int, np.integer)):
        raise TypeError(f"cross_entropy: the third argument is the class weights, as in PyTorch, got {weight}; "
                        f"pass ignore_index= by name")
    if weight is None and label_smoothing == 0.0:
        flat, flat_targets = _classes_last("cross_entropy", logits, targets)
        loss = _cross_entropy(flat, flat_targets, ignore_index, reduction)
        if reduction == "none" and logits.ndim > 2:
            return loss.reshape(*_target_array(targets, logits).shape)
        return loss
    log_probs = log_softmax(logits, axis=1 if logits.ndim > 1 else -1)
    nll = nll_loss(log_probs, targets, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return nll
    flat, flat_targets = _classes_last("cross_entropy", log_probs, targets)
    class_weights = _class_weights("cross_entropy", weight, flat)
    valid = (flat_targets != ignore_index).astype(flat.dtype)  # (N,)
    smooth = -(flat * Tensor(class_weights)).sum(axis=1) * Tensor(valid)  # (N,), 0 on ignored rows
    if reduction == "none" and logits.ndim > 2:
        smooth = smooth.reshape(*_target_array(targets, logits).shape)
    xp = backends.get_array_module(flat.data)
    picked = class_weights[xp.where(flat_targets != ignore_index, flat_targets, 0)] * valid  # w[tₙ], 0 if ignored
    smooth = _reduce("cross_entropy", smooth, reduction, Tensor(picked.sum()))
    classes = logits.shape[1] if logits.ndim > 1 else logits.shape[0]
    return nll * (1.0 - label_smoothing) + smooth * (label_smoothing / classes)


def mse_loss(input, target, reduction: str = "mean"):  # noqa: A002  (PyTorch's argument name)
    """PyTorch's ``F.mse_loss``: (input - target)², averaged (or summed, or kept); the
    gradient, 2 (input - target) / N for the mean, comes from the graph. The shapes must
    match: PyTorch only warns when they broadcast, which is nearly always a bug."""
    target = target if isinstance(target, Tensor) else Tensor(_target_array(target, input))
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"mse_loss: input {input.shape} and target {target.shape} must have the same shape")
    squared = (input - target) * (input - target)
    return _reduce("mse_loss", squared, reduction, Tensor(input.dtype.type(max(math.prod(input.shape), 1))))


def attention_weights(query, key, attn_mask=None, is_causal: bool = False, scale=None, key_padding_mask=None):
    """softmax(Q Kᵀ · scale + mask) over the keys: (..., L, S), each row sums to 1.

    ``attn_mask``: a bool mask where True means *may attend* (PyTorch's SDPA
    convention), or a float mask added to the scores. ``is_causal`` lets query i see
    keys 0..i only. ``key_padding_mask``: bool (B, S) for query (B, ..., L, E), where
    True means *a padding key* that no query of batch row b attends to (PyTorch's
    ``MultiheadAttention`` convention, the opposite of ``attn_mask``'s); it combines with
    the other two. ``scale`` defaults to 1/√E. Scaling, masking and the softmax are one
    fused op (``attention_softmax``), which takes an (L, S) mask and the (B, S) padding
    mask; an attn_mask broadcast over batch or heads, or a float Tensor mask that learns,
    is added to the scores through the graph instead. A row with every key masked comes
    out all 0.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"attention: query {query.shape} and key {key.shape} differ in their last axis")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.mT  # (..., L, S)
    if attn_mask is None:
        return attention_softmax(scores, scale, None, is_causal, key_padding_mask)
    xp = backends.get_array_module(scores.data)
    if isinstance(attn_mask, Tensor) and attn_mask.requires_grad:
        return attention_softmax(scores * scale + attn_mask, 1.0, None, is_causal, key_padding_mask)
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else xp.asarray(attn_mask)
    if mask.dtype == bool:
        mask = xp.where(mask, 0.0, -np.inf)  # additive: 0 keeps, -inf drops
    mask = mask.astype(scores.dtype, copy=False)
    if mask.shape != scores.shape[-2:]:  # broadcast over batch or heads: add it through the graph
        return attention_softmax(scores * scale + Tensor(mask), 1.0, None, is_causal, key_padding_mask)
    return attention_softmax(scores, scale, mask, is_causal, key_padding_mask)


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
