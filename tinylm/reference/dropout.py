"""Dropout kernels, reference versions, with a counter-based random mask.

Element k (in flat C order) of a tensor is kept iff ``bits24(seed, c(k)) >= threshold(p)``,
where bits24 is the top 24 bits of SplitMix64 at counter c(k). The mask is a pure
function of (seed, c(k)), so the NumPy, Cython and CUDA kernels draw exactly the same
mask in any order and on any number of threads, and the seed comes from tinylm's
seeded generator, so runs repeat. Kept elements are scaled by 1/(1-p), which keeps the
expected value: E[y] = (1-p) · x/(1-p) = x. Backward: y = x · m/(1-p) with m a
constant, so dL/dx = dL/dy · m/(1-p).

The counter map. By default c(k) = k. Three integers move it:

    c(k) = k + offset + (k // block) · gap        (block = 0: no gaps, c(k) = k + offset)

so a tensor holding some rows of a larger one can draw the larger one's mask for its
rows. Rows [f, f + b) of G along an axis, with ``inner`` elements after the axis: the
local element k = (o·b + r)·inner + i is the global element (o·G + f + r)·inner + i,
which is k + f·inner + (k // (b·inner)) · (G - b)·inner: offset = f·inner,
block = b·inner, gap = (G - b)·inner. ``tinylm.random.global_batch_rows`` sets them.
"""

from __future__ import annotations

import math
import numbers

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


def check_counter_map(op: str, size: int, offset, block, gap) -> tuple[int, int, int]:
    """(offset, block, gap) as Python ints, after checking them for a tensor of ``size``
    elements: integers (not bools), non-negative, block > 0 when gap > 0, and the largest
    counter plus one (SplitMix64 hashes c(k) + 1) within uint64, so no kernel wraps
    around. A ValueError (TypeError for a non-integer) names ``op`` and the values."""
    values = {"offset": offset, "block": block, "gap": gap}
    for name, value in values.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{op}: {name} must be an integer, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{op}: {name} must be >= 0, got {value}")
    offset, block, gap = (int(v) for v in values.values())
    if gap > 0 and block == 0:
        raise ValueError(f"{op}: gap={gap} needs a block > 0 (the elements between two gaps), got block=0")
    if size > 0:
        last = size - 1
        largest = last + offset + (last // block) * gap if block else last + offset
        if largest + 1 > 2**64 - 1:
            raise ValueError(f"{op}: the counter map (offset={offset}, block={block}, gap={gap}) reaches "
                             f"{largest} for {size} elements, past the uint64 range")
    return offset, block, gap


def dropout_counters(size: int, offset: int = 0, block: int = 0, gap: int = 0, xp=np):
    """(size,) uint64: the counter c(k) = k + offset + (k // block) · gap of each element."""
    k = xp.arange(size, dtype=np.uint64)
    counters = k + np.uint64(offset)
    if block:
        counters += (k // np.uint64(block)) * np.uint64(gap)
    return counters


def dropout_mask(shape, p: float, seed: int, xp=np, offset: int = 0, block: int = 0, gap: int = 0):
    """uint8 mask of ``shape``: 1 where the element is kept."""
    counters = dropout_counters(math.prod(shape), offset, block, gap, xp) + np.uint64(1)  # c(k) + 1
    with np.errstate(over="ignore"):
        bits = splitmix64(np.uint64(seed % 2**64) + counters * np.uint64(GOLDEN_GAMMA)) >> np.uint64(40)
    return (bits >= dropout_threshold(p)).astype(np.uint8).reshape(shape)


def dropout_forward(x, p: float, seed: int, offset: int = 0, block: int = 0, gap: int = 0):
    """-> (y = x · mask / (1 - p), mask uint8); p = 1 drops everything. Element k's
    keep/drop decision is drawn at counter offset + k + (k // block) · gap (see above)."""
    xp = get_array_module(x)
    offset, block, gap = check_counter_map("dropout_forward", x.size, offset, block, gap)
    mask = dropout_mask(x.shape, p, seed, xp, offset, block, gap)
    scale = x.dtype.type(1.0 / (1.0 - p)) if p < 1.0 else x.dtype.type(0.0)
    return x * mask * scale, mask


def dropout_backward(grad_y, mask, p: float):
    scale = grad_y.dtype.type(1.0 / (1.0 - p)) if p < 1.0 else grad_y.dtype.type(0.0)
    return grad_y * mask * scale
