"""Launch wrappers for ``dropout.cu``: the ``cuda`` backend's dropout kernels.

Same names, signatures and meaning as ``tinylm/reference/dropout.py``; the mask is the
reference's counter-based mask, bit for bit. ``threads`` and ``max_blocks`` set the
launch geometry (the mask does not depend on them).
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import array_module_of, as_array, int_scalar, real_scalar
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for
from tinylm.reference.dropout import check_counter_map, dropout_threshold

SOURCE = CudaSource("dropout.cu")


def _scale(dtype, p: float):
    return dtype.type(1.0 / (1.0 - p)) if p < 1.0 else dtype.type(0.0)  # as the reference


def dropout_forward(x, p: float, seed: int, offset: int = 0, block: int = 0, gap: int = 0, *,
                    threads: int | None = None, max_blocks: int | None = None):
    """-> (y = x · mask / (1 - p), mask uint8 of x's shape); p = 1 drops everything. Element
    k is drawn at counter k + offset + (k // block) · gap (block = 0: k + offset)."""
    op = "dropout_forward"
    xp = array_module_of(op, "x", x)
    suffix = float_suffix(op, "x", x)
    p = real_scalar(op, "p", p)
    threshold = dropout_threshold(p)  # a ValueError for p outside [0, 1]
    seed = int_scalar(op, "seed", seed)
    offset, block, gap = check_counter_map(op, x.size, offset, block, gap)
    y = xp.empty(x.shape, dtype=x.dtype)
    mask = xp.empty(x.shape, dtype=np.uint8)
    threads = threads_for(x, threads)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(x, -(-x.size // threads), max_blocks), threads,
                  (xp.ascontiguousarray(x), y, mask, np.int64(x.size), np.uint64(seed % 2**64),
                   np.uint64(offset), np.uint64(block), np.uint64(gap), np.uint32(threshold), _scale(x.dtype, p)))
    return y, mask


def dropout_backward(grad_y, mask, p: float, *, threads: int | None = None, max_blocks: int | None = None):
    """dL/dx = dL/dy · mask / (1 - p)."""
    op = "dropout_backward"
    xp = array_module_of(op, "grad_y", grad_y)
    suffix = float_suffix(op, "grad_y", grad_y)
    p = real_scalar(op, "p", p)
    dropout_threshold(p)
    mask = as_array(op, "mask", mask, xp)
    if mask.dtype != np.uint8:
        raise TypeError(f"{op}: mask must be uint8 (from dropout_forward), got {mask.dtype}")
    if tuple(mask.shape) != tuple(grad_y.shape):
        raise ValueError(f"{op}: mask {tuple(mask.shape)} must have grad_y's shape {tuple(grad_y.shape)}")
    grad_x = xp.empty(grad_y.shape, dtype=grad_y.dtype)
    threads = threads_for(grad_y, threads)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(grad_y, -(-grad_y.size // threads), max_blocks), threads,
                  (xp.ascontiguousarray(grad_y), xp.ascontiguousarray(mask), grad_x, np.int64(grad_y.size),
                   _scale(grad_y.dtype, p)))
    return grad_x
