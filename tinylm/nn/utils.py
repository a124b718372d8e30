"""Helpers that act on a model's gradients."""

from __future__ import annotations

import math

from tinylm import backends


def clip_grad_norm_(parameters, max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    The norm is taken over every gradient as if they were one long vector; when it is
    above ``max_norm`` every gradient is multiplied by max_norm / (norm + 1e-6), so the
    update keeps its direction and only its length shrinks (PyTorch's rule). Returns
    the norm before clipping.
    """
    from tinylm.autograd import Tensor

    parameters = [parameters] if isinstance(parameters, Tensor) else parameters
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    squares = [float((g.data.astype("float64") ** 2).sum()) for g in grads]
    total = math.sqrt(sum(squares))
    coefficient = max_norm / (total + eps)
    if coefficient < 1.0:
        for g in grads:
            xp = backends.get_array_module(g.data)
            g.data = g.data * xp.asarray(coefficient, dtype=g.dtype)
    return total
