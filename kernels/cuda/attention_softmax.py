"""Launch wrappers for ``attention_softmax.cu``: the ``cuda`` backend's attention softmax.

Same names, signatures and meaning as ``tinylm/reference/attention_softmax.py``: scores
(..., L, S), an additive (L, S) mask or None, causal masking of keys j > i, a bool (B, S)
key padding mask (True = padding) for scores (B, ..., L, S) or None; rows with every key
masked come out all 0. ``threads`` and ``max_blocks`` set the launch geometry
(for tests and tuning).
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import array_module_of, as_array, flag, real_scalar, same_dtype
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for
from tinylm.reference.attention_softmax import check_attention_mask

SOURCE = CudaSource("attention_softmax.cu")


def attention_softmax_forward(scores, scale: float, mask=None, causal: bool = False, key_padding_mask=None, *,
                              threads: int | None = None, max_blocks: int | None = None):
    """softmax over the last axis of scale · scores + mask, keys j > i dropped if causal,
    and keys j of batch row b dropped where key_padding_mask[b, j]."""
    op = "attention_softmax_forward"
    xp = array_module_of(op, "scores", scores)
    suffix = float_suffix(op, "scores", scores)
    scale, causal = real_scalar(op, "scale", scale), flag(op, "causal", causal)
    if mask is not None:
        mask = as_array(op, "mask", mask, xp)
    if key_padding_mask is not None:  # small, like an index array: taken from the host too
        key_padding_mask = as_array(op, "key_padding_mask", key_padding_mask, xp, index=True)
    check_attention_mask(op, scores, mask, key_padding_mask)  # shapes: the kernel reads (L, S) and (B, S)
    if mask is not None and mask.dtype.kind != "f":
        raise TypeError(f"{op}: mask must be a float array (0 keeps, -inf drops), got {mask.dtype}")
    queries, keys = scores.shape[-2:]
    rows = int(np.prod(scores.shape[:-1]))
    has_mask = mask is not None
    # As the reference: the mask is cast to the scores' dtype; no mask = an empty array never read.
    mask = xp.ascontiguousarray(mask, dtype=scores.dtype) if mask is not None else xp.empty(0, dtype=scores.dtype)
    has_padding = key_padding_mask is not None
    # bool and uint8 share one byte per element: a view, not a copy. No mask: an empty array never read.
    padding = xp.ascontiguousarray(key_padding_mask if has_padding else xp.empty(0, dtype=bool)).view(xp.uint8)
    batch_rows = rows // scores.shape[0] if has_padding and rows else 1  # rows per batch row: prod(...) · L
    probs = xp.empty(scores.shape, dtype=scores.dtype)
    if keys == 0 or rows == 0:
        return probs
    threads = threads_for(scores, threads, row_length=keys)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(scores, rows, max_blocks), threads,
                  (xp.ascontiguousarray(scores), scores.dtype.type(scale), mask, probs, np.int64(rows),
                   np.int64(queries), np.int64(keys), np.int32(has_mask), np.int32(causal), padding,
                   np.int64(batch_rows), np.int32(has_padding)))
    return probs


def attention_softmax_backward(grad_probs, probs, scale: float, *, threads: int | None = None,
                               max_blocks: int | None = None):
    """dL/dscores = scale · p ⊙ (g - Σ g p), row by row."""
    op = "attention_softmax_backward"
    xp = array_module_of(op, "probs", probs)
    suffix = float_suffix(op, "probs", probs)
    scale = real_scalar(op, "scale", scale)
    grad_probs = as_array(op, "grad_probs", grad_probs, xp)
    if tuple(grad_probs.shape) != tuple(probs.shape) or probs.ndim < 1:
        raise ValueError(f"{op}: grad_probs {tuple(grad_probs.shape)} and probs {tuple(probs.shape)} "
                         "must have one shape")
    same_dtype(op, "probs", probs, grad_probs=grad_probs)
    keys = probs.shape[-1]
    rows = int(np.prod(probs.shape[:-1]))
    grad_scores = xp.empty(probs.shape, dtype=probs.dtype)
    if keys == 0:
        return grad_scores
    threads = threads_for(probs, threads, row_length=keys)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(probs, rows, max_blocks), threads,
                  (xp.ascontiguousarray(grad_probs), xp.ascontiguousarray(probs), grad_scores, np.int64(rows),
                   np.int64(keys), probs.dtype.type(scale)))
    return grad_scores
