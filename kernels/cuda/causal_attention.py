"""Launch wrappers for ``causal_attention.cu``: the ``cuda`` backend's fused causal attention.

Same names, signatures and meaning as ``tinylm/reference/causal_attention.py``. Forward and
backward are fused, flash-attention style: no (T, T) matrix is ever in memory.
``causal_attention_backward_unfused`` is the plain alternative, kept as a second opinion
and for comparison: it recomputes the scores q kᵀ with the array module's matmul
(cuBLAS on a GPU) and goes through the attention softmax kernels of ``attention_softmax.cu``,
holding (N, T, T) scores, probabilities and their gradients in memory.

``threads`` and ``max_blocks`` set the launch geometry (for tests and tuning). Without
``threads``, the block takes as many warps (queries or keys per block) as the default
allows and its shared memory fits in 48 KiB.
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import array_module_of, as_array, real_scalar
from tinylm.kernels.cuda import attention_softmax
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for
from tinylm.reference.causal_attention import check_qkv

SOURCE = CudaSource("causal_attention.cu")
KEY_TILE, MAX_HEAD = 32, 128  # as ATTENTION_KEY_TILE and ATTENTION_MAX_HEAD in causal_attention.cu
MAX_SHARED_BYTES = 48 * 1024


def shared_bytes(kernel: str, head_size: int, warps: int, itemsize: int) -> int:
    """Dynamic shared memory of each kernel, as laid out at the top of its body."""
    padded = head_size + 1
    elements = {
        "forward": KEY_TILE * padded + KEY_TILE * head_size + warps * head_size + warps * KEY_TILE,
        "backward_kv": 2 * KEY_TILE * padded + 2 * KEY_TILE + 2 * warps * head_size + 2 * warps * KEY_TILE,
        "backward_q": 2 * KEY_TILE * padded + 2 * warps * head_size + warps * KEY_TILE,
    }[kernel]
    return elements * itemsize


def _geometry(op: str, kernel: str, q, threads: int | None) -> tuple[int, int]:
    """(threads, shared bytes): the given block size if its shared memory fits, else a
    ValueError; without one, the largest default-or-smaller block whose memory fits."""
    head_size, itemsize = q.shape[2], q.dtype.itemsize
    if head_size > MAX_HEAD:
        raise ValueError(f"{op}: head size {head_size} (q {tuple(q.shape)}) is above the kernel's {MAX_HEAD}")
    chosen = threads_for(q, threads)
    candidates = [chosen] if threads is not None else range(chosen, 0, -32)
    for block in candidates:
        needed = shared_bytes(kernel, head_size, block // 32, itemsize)
        if needed <= MAX_SHARED_BYTES:
            return block, needed
    raise ValueError(f"{op}: q {tuple(q.shape)} {q.dtype} with {chosen} threads needs "
                     f"{shared_bytes(kernel, head_size, chosen // 32, itemsize)} bytes of shared memory, above "
                     f"{MAX_SHARED_BYTES}; use fewer threads, float32 or a smaller head")


def causal_attention_forward(q, k, v, scale: float, *, threads: int | None = None, max_blocks: int | None = None):
    """q, k, v (N, T, hs) -> (out (N, T, hs), logsumexp (N, T)), fused."""
    op = "causal_attention_forward"
    xp = array_module_of(op, "q", q)
    k, v = as_array(op, "k", k, xp), as_array(op, "v", v, xp)
    scale = real_scalar(op, "scale", scale)
    check_qkv(op, q, k, v)
    suffix = float_suffix(op, "q, k, v", q)
    heads, steps, head_size = q.shape
    threads, shared = _geometry(op, "forward", q, threads)
    out = xp.empty(q.shape, dtype=q.dtype)
    logsumexp = xp.empty((heads, steps), dtype=q.dtype)
    query_tiles = -(-steps // (threads // 32))
    SOURCE.launch(f"{op}_{suffix}", blocks_for(q, heads * query_tiles, max_blocks), threads,
                  (xp.ascontiguousarray(q), xp.ascontiguousarray(k), xp.ascontiguousarray(v), out, logsumexp,
                   np.int64(heads), np.int64(steps), np.int32(head_size), q.dtype.type(scale)), shared_bytes=shared)
    return out, logsumexp


def _checked_backward(op, grad_out, q, k, v, out, logsumexp, scale):
    xp = array_module_of(op, "q", q)
    k, v = as_array(op, "k", k, xp), as_array(op, "v", v, xp)
    grad_out, out = as_array(op, "grad_out", grad_out, xp), as_array(op, "out", out, xp)
    logsumexp = as_array(op, "logsumexp", logsumexp, xp)
    scale = real_scalar(op, "scale", scale)
    check_qkv(op, q, k, v)
    suffix = float_suffix(op, "q, k, v", q)
    if tuple(grad_out.shape) != tuple(q.shape) or tuple(out.shape) != tuple(q.shape):
        raise ValueError(f"{op}: grad_out {tuple(grad_out.shape)} and out {tuple(out.shape)} must be (N, T, hs) = "
                         f"{tuple(q.shape)}")
    if tuple(logsumexp.shape) != tuple(q.shape[:2]):
        raise ValueError(f"{op}: logsumexp {tuple(logsumexp.shape)} must be (N, T) = {tuple(q.shape[:2])}")
    for name, value in (("grad_out", grad_out), ("out", out), ("logsumexp", logsumexp)):
        if value.dtype != q.dtype:
            raise TypeError(f"{op}: {name} is {value.dtype}, expected {q.dtype} like q")
    return xp, suffix, k, v, grad_out, out, logsumexp, scale


def causal_attention_backward(grad_out, q, k, v, out, logsumexp, scale: float, *, threads: int | None = None,
                              max_blocks: int | None = None):
    """-> (dq, dk, dv), fused: two kernels recompute the probabilities from ``logsumexp``
    tile by tile (see causal_attention.cu)."""
    op = "causal_attention_backward"
    xp, suffix, k, v, grad_out, out, logsumexp, scale = _checked_backward(op, grad_out, q, k, v, out, logsumexp, scale)
    heads, steps, head_size = q.shape
    q, k, v = (xp.ascontiguousarray(a) for a in (q, k, v))
    grad_out, logsumexp = xp.ascontiguousarray(grad_out), xp.ascontiguousarray(logsumexp)
    delta = xp.ascontiguousarray((grad_out * out).sum(axis=-1))  # (N, T): Dᵢ = gᵢ · oᵢ
    grad_q, grad_k, grad_v = (xp.empty(q.shape, dtype=q.dtype) for _ in range(3))
    real = q.dtype.type
    for kernel, outputs in (("backward_kv", (grad_k, grad_v)), ("backward_q", (grad_q,))):
        block, shared = _geometry(op, kernel, q, threads)
        tiles = heads * -(-steps // (block // 32))
        SOURCE.launch(f"causal_attention_{kernel}_{suffix}", blocks_for(q, tiles, max_blocks), block,
                      (grad_out, q, k, v, logsumexp, delta, *outputs, np.int64(heads), np.int64(steps),
                       np.int32(head_size), real(scale)), shared_bytes=shared)
    return grad_q, grad_k, grad_v


def causal_attention_backward_unfused(grad_out, q, k, v, out, logsumexp, scale: float, *, threads: int | None = None,
                                      max_blocks: int | None = None):
    """-> (dq, dk, dv) through cuBLAS and the attention softmax kernels, with (N, T, T)
    matrices in memory; ``out`` and ``logsumexp`` are checked but not needed here."""
    op = "causal_attention_backward"
    xp, _, k, v, grad_out, _, _, scale = _checked_backward(op, grad_out, q, k, v, out, logsumexp, scale)
    geometry = dict(threads=threads, max_blocks=max_blocks)
    scores = q @ k.transpose(0, 2, 1)  # (N, T, T), unscaled: the softmax kernel scales
    probs = attention_softmax.attention_softmax_forward(scores, scale, None, True, **geometry)
    grad_v = probs.transpose(0, 2, 1) @ grad_out
    grad_probs = grad_out @ v.transpose(0, 2, 1)
    # The softmax backward multiplies by the scale too.
    grad_scores = attention_softmax.attention_softmax_backward(grad_probs, probs, scale, **geometry)
    return grad_scores @ k, grad_scores.transpose(0, 2, 1) @ q, grad_v
