"""Dropout as one op, its mask drawn by the ``dropout_forward`` kernel (see
``tinylm/reference/dropout.py`` for the counter-based mask)."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function
from tinylm.random import default_generator


class Dropout(Function):
    """y = x ⊙ m / (1 - p) with m a constant 0/1 mask, so dL/dx = dL/dy ⊙ m / (1 - p)."""

    def __init__(self, p: float, seed: int):
        self.p, self.seed = p, seed

    def forward(self, x):
        y, mask = backends.kernel("dropout_forward")(x, self.p, self.seed)
        self.save_for_backward(mask)
        return y

    def backward(self, gy):
        (mask,) = self.saved
        return backends.kernel("dropout_backward")(gy, mask, self.p)


def dropout(x, p: float = 0.5, training: bool = True, generator=None):
    """Zero each element with probability p, scale the survivors by 1/(1-p); the identity
    when not training. One 63-bit seed is drawn from ``generator`` (tinylm's seeded one
    by default) per call, so runs repeat and every backend draws the same mask."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    seed = int((generator or default_generator()).integers(0, 2**63))
    return Dropout(p, seed)(x)
