"""Launch wrapper for ``int8_matmul.cu``: the ``cuda`` backend's product with int8 weights.

Same name, signature and meaning as ``tinylm/reference/int8_matmul.py``:
``int8_matmul(x (M, K) float32 or float64, weight (N, K) int8, scale (N,) float32) -> (M, N)``
in x's dtype, x @ (scale[:, None] · weight)ᵀ. The kernel gives each weight row a warp;
``threads`` and ``max_blocks`` set the launch geometry (for tests and tuning; the result
does not depend on them). The weights go to the kernel as a uint8 view of the same bytes
(the launcher's C types have no signed char), which it reads back as int8.
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import array_module_of, as_array
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for

SOURCE = CudaSource("int8_matmul.cu")


def int8_matmul(x, weight, scale, *, threads: int | None = None, max_blocks: int | None = None):
    """x (M, K), weight (N, K) int8, scale (N,) float32 -> x @ (scale[:, None] · weight)ᵀ (M, N)."""
    op = "int8_matmul"
    xp = array_module_of(op, "x", x)
    suffix = float_suffix(op, "x", x)
    weight = as_array(op, "weight", weight, xp)
    scale = as_array(op, "scale", scale, xp)
    if x.ndim != 2:
        raise ValueError(f"{op}: x {tuple(x.shape)} must be 2-D (M, K)")
    if weight.dtype != np.int8:
        raise TypeError(f"{op}: weight must be int8, got {weight.dtype}")
    if weight.ndim != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: weight {tuple(weight.shape)} must be (N, K) with K = {x.shape[1]} "
                         f"from x {tuple(x.shape)}")
    if scale.dtype != np.float32:
        raise TypeError(f"{op}: scale must be float32, got {scale.dtype}")
    if tuple(scale.shape) != (weight.shape[0],):
        raise ValueError(f"{op}: scale {tuple(scale.shape)} must be {(weight.shape[0],)}")
    batch, cols, rows = x.shape[0], x.shape[1], weight.shape[0]
    y = xp.empty((batch, rows), dtype=x.dtype)
    if batch == 0 or rows == 0:
        return y
    threads = threads_for(x, threads)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(x, -(-rows // (threads // 32)), max_blocks), threads,
                  (xp.ascontiguousarray(x), xp.ascontiguousarray(weight).view(xp.uint8), xp.ascontiguousarray(scale),
                   y, np.int64(batch), np.int64(rows), np.int64(cols)))
    return y
