"""Int8 weights, reference versions: quantize a weight matrix, and multiply by it.

A weight matrix W (N, K) is stored as int8 values q (N, K) and one float32 scale per
output channel (row), s (N,), with W ≈ s[n] · q[n, k] (``quantize_per_channel``). The
product with float activations x (M, K) never builds the float matrix:

    y[m, n] = Σ_k x[m, k] · s[n] q[n, k] = s[n] · Σ_k x[m, k] q[n, k]

The scale of a row factors out of the row's sum, so a kernel converts each int8 value
to float, accumulates in float32, and scales each output once. At batch 1 (M = 1, a
matrix-vector product) the time goes into reading W, and int8 is 4x fewer bytes than
float32: that is the speed-up the fast kernels chase.
"""

from __future__ import annotations

from tinylm.backends import get_array_module

INT8_MAX = 127  # symmetric: -127..127, so -q is always representable and 0 is exact


def quantize_per_channel(weight):
    """weight (N, K) float -> q (N, K) int8, scale (N,) float32 with weight ≈ scale[:, None] * q.

    Symmetric, one scale per row: s = max|W[n]| / 127 and q = round(W / s), so the row's
    largest magnitude maps to ±127 and each value is off by at most s/2. An all-zero row
    gets s = 1 (any s reproduces it) so that no scale is 0.
    """
    xp = get_array_module(weight)
    weight = xp.asarray(weight, dtype=xp.float32)
    largest = xp.abs(weight).max(axis=1) if weight.shape[1] else xp.zeros(weight.shape[0], xp.float32)
    scale = xp.where(largest > 0, largest / INT8_MAX, 1).astype(xp.float32)  # (N,)
    q = xp.clip(xp.rint(weight / scale[:, None]), -INT8_MAX, INT8_MAX).astype(xp.int8)
    return q, scale


def quantize_per_tensor(weight):
    """weight (N, K) float -> q (N, K) int8, scale () float32: one scale for the whole
    matrix, s = max|W| / 127. The baseline per-channel scales improve on: a row of small
    weights shares the step size of the largest weight anywhere in the matrix."""
    xp = get_array_module(weight)
    weight = xp.asarray(weight, dtype=xp.float32)
    largest = float(xp.abs(weight).max()) if weight.size else 0.0
    scale = xp.asarray(largest / INT8_MAX if largest > 0 else 1.0, dtype=xp.float32)
    q = xp.clip(xp.rint(weight / scale), -INT8_MAX, INT8_MAX).astype(xp.int8)
    return q, scale


def dequantize(q, scale):
    """q (N, K) int8 and its scales, (N,) per channel or () per tensor -> float32 (N, K)."""
    xp = get_array_module(q)
    scale = xp.asarray(scale, dtype=xp.float32)
    return q.astype(xp.float32) * (scale[:, None] if scale.ndim == 1 else scale)


def int8_matmul(x, weight, scale):
    """x (M, K) float32 or float64, weight (N, K) int8, scale (N,) float32 -> (M, N) in x's dtype:
    x @ (scale[:, None] · weight)ᵀ, accumulated in x's dtype (see the module docstring)."""
    return (x @ weight.T.astype(x.dtype)) * scale.astype(x.dtype)
