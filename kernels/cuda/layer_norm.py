"""Launch wrappers for ``layer_norm.cu``: the ``cuda`` backend's LayerNorm kernels.

Same names, signatures and meaning as ``tinylm/reference/layer_norm.py``: x (N, D),
weight and bias (D,) or None. ``threads`` and ``max_blocks`` set the launch geometry
(for tests and tuning; results do not depend on them beyond rounding).
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import array_module_of, as_array, real_scalar, same_dtype
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for

SOURCE = CudaSource("layer_norm.cu")
WEIGHT_GRAD_MAX_CHUNKS = 64  # row chunks of the dw/db column sums; the wrapper adds them up


def _check_x(op: str, x):
    if x.ndim != 2:
        raise ValueError(f"{op}: x must be (N, D), got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{op}: x {tuple(x.shape)} has no columns to normalise")
    return float_suffix(op, "x", x)


def _check_vector(op: str, name: str, value, x, xp):
    if value is None:
        return None
    value = as_array(op, name, value, xp)
    if tuple(value.shape) != (x.shape[1],):
        raise ValueError(f"{op}: {name} {tuple(value.shape)} must be (D,) = ({x.shape[1]},) for x {tuple(x.shape)}")
    same_dtype(op, "x", x, **{name: value})
    return xp.ascontiguousarray(value)


def layer_norm_forward(x, weight, bias, eps: float, *, threads: int | None = None, max_blocks: int | None = None):
    """x (N, D), weight and bias (D,) or None -> (y (N, D), mean (N,), rstd (N,))."""
    op = "layer_norm_forward"
    xp = array_module_of(op, "x", x)
    suffix = _check_x(op, x)
    eps = real_scalar(op, "eps", eps)
    weight, bias = _check_vector(op, "weight", weight, x, xp), _check_vector(op, "bias", bias, x, xp)
    rows, dim = x.shape
    ones = weight if weight is not None else xp.ones(dim, dtype=x.dtype)  # x̂ · 1 = x̂ exactly
    zeros = bias if bias is not None else xp.zeros(dim, dtype=x.dtype)  # x̂ + 0 = x̂ exactly
    y = xp.empty_like(x, order="C")
    mean, rstd = xp.empty(rows, dtype=x.dtype), xp.empty(rows, dtype=x.dtype)
    threads = threads_for(x, threads, row_length=dim)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(x, rows, max_blocks), threads,
                  (xp.ascontiguousarray(x), ones, zeros, y, mean, rstd, np.int64(rows), np.int64(dim),
                   x.dtype.type(eps)))
    return y, mean, rstd


def layer_norm_backward(grad_y, x, weight, mean, rstd, *, threads: int | None = None, max_blocks: int | None = None):
    """-> (grad_x (N, D), grad_weight (D,) or None, grad_bias (D,) or None); the last two
    are None when ``weight`` is None, as in the reference."""
    op = "layer_norm_backward"
    xp = array_module_of(op, "x", x)
    suffix = _check_x(op, x)
    grad_y = as_array(op, "grad_y", grad_y, xp)
    if tuple(grad_y.shape) != tuple(x.shape):
        raise ValueError(f"{op}: grad_y {tuple(grad_y.shape)} must have x's shape {tuple(x.shape)}")
    weight = _check_vector(op, "weight", weight, x, xp)
    mean, rstd = (as_array(op, name, a, xp) for name, a in (("mean", mean), ("rstd", rstd)))
    for name, value in (("mean", mean), ("rstd", rstd)):
        if tuple(value.shape) != (x.shape[0],):
            raise ValueError(f"{op}: {name} {tuple(value.shape)} must be (N,) = ({x.shape[0]},)")
    same_dtype(op, "x", x, grad_y=grad_y, mean=mean, rstd=rstd)
    rows, dim = x.shape
    grad_y, x = xp.ascontiguousarray(grad_y), xp.ascontiguousarray(x)
    mean, rstd = xp.ascontiguousarray(mean), xp.ascontiguousarray(rstd)
    ones = weight if weight is not None else xp.ones(dim, dtype=x.dtype)
    grad_x = xp.empty_like(x)
    threads = threads_for(x, threads, row_length=dim)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(x, rows, max_blocks), threads,
                  (grad_y, x, ones, mean, rstd, grad_x, np.int64(rows), np.int64(dim)))
    if weight is None:
        return grad_x, None, None
    chunks = max(1, min(rows, WEIGHT_GRAD_MAX_CHUNKS))
    rows_per_chunk = -(-rows // chunks) if rows else 1
    chunks = -(-rows // rows_per_chunk) if rows else 1  # no empty chunk at the end
    partial_w = xp.zeros((chunks, dim), dtype=x.dtype)
    partial_b = xp.zeros((chunks, dim), dtype=x.dtype)
    if rows:
        column_blocks = blocks_for(x, -(-dim // threads), max_blocks)
        SOURCE.launch(f"layer_norm_weight_grad_{suffix}", (column_blocks, chunks), threads,
                      (grad_y, x, mean, rstd, partial_w, partial_b, np.int64(rows), np.int64(dim),
                       np.int64(rows_per_chunk)))
    return grad_x, partial_w.sum(axis=0), partial_b.sum(axis=0)
