"""Dropout kernels, reference versions, with a counter-based random mask.

Element k (in flat C order) of a tensor is kept iff ``bits24(seed, k) >= threshold(p)``,
where bits24 is the top 24 bits of SplitMix64 at counter k. The mask is a pure
function of (seed, k), so the NumPy, Cython and CUDA kernels draw exactly the same
mask in any order and on any number of threads, and the seed comes from tinylm's
seeded generator, so runs repeat. Kept elements are scaled by 1/(1-p), which keeps the
expected value: E[y] = (1-p) · x/(1-p) = x. Backward: y = x · m/(1-p) with m a
constant, so dL/dx = dL/dy · m/(1-p).
"""

from __future__ import annotations

import math

import numpy as np

from tinylm.backends import get_array_module

GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2^64 / golden ratio, odd


def dropout_threshold(p: float) -> int:
    """Keep an element iff its 24 random bits are >= this, so P(keep) ≈ 1 - p."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    return min(math.ceil(p * 2**24), 2**24)


def splitmix64(z):
    """SplitMix64's output function on uint64 arrays (arithmetic wraps mod 2^64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_mask(shape, p: float, seed: int, xp=np):
    """uint8 mask of ``shape``: 1 where the element is kept."""
    counters = xp.arange(1, math.prod(shape) + 1, dtype=np.uint64)  # k + 1
    with np.errstate(over="ignore"):
        bits = splitmix64(np.uint64(seed % 2**64) + counters * np.uint64(GOLDEN_GAMMA)) >> np.uint64(40)
    return (bits >= dropout_threshold(p)).astype(np.uint8).reshape(shape)


def dropout_forward(x, p: float, seed: int):
    """-> (y = x · mask / (1 - p), mask uint8); p = 1 drops everything."""
    xp = get_array_module(x)
    mask = dropout_mask(x.shape, p, seed, xp)
    scale = x.dtype.type(1.0 / (1.0 - p)) if p < 1.0 else x.dtype.type(0.0)
    return x * mask * scale, mask


def dropout_backward(grad_y, mask, p: float):
    scale = grad_y.dtype.type(1.0 / (1.0 - p)) if p < 1.0 else grad_y.dtype.type(0.0)
    return grad_y * mask * scale
