"""Dropout as one op, its mask drawn by the ``dropout_forward`` kernel (see
``tinylm/reference/dropout.py`` for the counter-based mask and its counter map)."""

from __future__ import annotations

import math

from tinylm import backends
from tinylm.autograd import Function
from tinylm.random import batch_rows, default_generator


class Dropout(Function):
    """y = x ⊙ m / (1 - p) with m a constant 0/1 mask, so dL/dx = dL/dy ⊙ m / (1 - p).
    m is drawn from ``seed`` at the counters k + offset + (k // block) · gap."""

    def __init__(self, p: float, seed: int, offset: int = 0, block: int = 0, gap: int = 0):
        self.p, self.seed = p, seed
        self.offset, self.block, self.gap = offset, block, gap

    def forward(self, x):
        y, mask = backends.kernel("dropout_forward")(x, self.p, self.seed, self.offset, self.block, self.gap)
        self.save_for_backward(mask)
        return y

    def backward(self, gy):
        (mask,) = self.saved
        return backends.kernel("dropout_backward")(gy, mask, self.p)


def counter_map(shape: tuple[int, ...], batch_axis: int, first: int, local: int, total: int) -> tuple[int, int, int]:
    """(offset, block, gap) that give a tensor of ``shape``, holding rows [first, first + local)
    of a global batch of ``total`` rows on ``batch_axis``, the global batch's counters.

    With outer = prod(shape[:axis]) and inner = prod(shape[axis+1:]), local element
    k = (o·local + r)·inner + i sits at global element (o·total + first + r)·inner + i
    = k + first·inner + (k // (local·inner)) · (total - local)·inner."""
    ndim = len(shape)
    if not -ndim <= batch_axis < ndim:
        raise ValueError(f"dropout: batch_axis {batch_axis} is out of range for x of shape {tuple(shape)}")
    axis = batch_axis % ndim
    if shape[axis] != local:
        raise ValueError(f"dropout: x of shape {tuple(shape)} has {shape[axis]} rows on batch_axis {batch_axis}, "
                         f"but global_batch_rows(first={first}, local={local}, total={total}) expects {local}")
    inner = math.prod(shape[axis + 1:])
    block = local * inner
    gap = (total - local) * inner if block else 0  # an empty tensor draws nothing: no gaps needed
    return first * inner, block, gap


def dropout(x, p: float = 0.5, training: bool = True, generator=None, batch_axis: int = 0):
    """Zero each element with probability p, scale the survivors by 1/(1-p); the identity
    when not training. One 63-bit seed is drawn from ``generator`` (tinylm's seeded one
    by default) per call, so runs repeat and every backend draws the same mask.

    Inside ``tinylm.random.global_batch_rows(first, local, total)``, x holds ``local``
    rows of a global batch on ``batch_axis`` (checked) and each element draws its global
    row's mask; outside it, ``batch_axis`` plays no part."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    seed = int((generator or default_generator()).integers(0, 2**63))
    rows = batch_rows()
    if rows is None:
        return Dropout(p, seed)(x)
    return Dropout(p, seed, *counter_map(x.shape, batch_axis, *rows))(x)
