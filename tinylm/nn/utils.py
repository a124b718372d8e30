"""Helpers that act on a model's gradients, as ``torch.nn.utils``."""

from __future__ import annotations

import math

import numpy as np

from tinylm import backends


def _grads(parameters) -> list:
    """The gradients (tensors) of ``parameters`` (one tensor or an iterable), skipping
    parameters without one (frozen, or unused by the loss)."""
    from tinylm.autograd import Tensor

    parameters = [parameters] if isinstance(parameters, Tensor) else parameters
    return [p.grad for p in parameters if p.grad is not None]


def _norm(array, norm_type: float) -> float:
    """The ``norm_type``-norm of one array as a flat vector, in float64."""
    values = np.abs(backends.to_device(array, "cpu").astype(np.float64, copy=False)).reshape(-1)
    if norm_type == math.inf:
        return float(values.max()) if values.size else 0.0
    return float((values**norm_type).sum() ** (1.0 / norm_type))


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    """Scale all gradients together so their global ``norm_type``-norm is at most
    ``max_norm``; return that norm, taken before clipping.

    torch's rule: the norm is taken over every gradient as if they were one long vector
    (the norm of the per-gradient norms, which is the same thing), with ``norm_type``
    any p > 0 (2 by default) or ``math.inf`` (the largest |g|). When it is above
    ``max_norm`` every gradient is multiplied by max_norm / (norm + 1e-6), so the
    update keeps its direction and only its length shrinks; otherwise nothing changes.

    Returns a Python float, computed in float64 (torch returns a 0-d tensor of the
    gradients' dtype: ``float()`` of it is the same number, up to float32 rounding
    for float32 gradients). With no gradients at all it is 0.0. A NaN or infinite
    norm raises RuntimeError when ``error_if_nonfinite``, else the gradients are
    multiplied by the NaN coefficient as in torch.
    """
    norm_type = float(norm_type)
    if not (norm_type > 0):
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or math.inf, got {norm_type}")
    grads = _grads(parameters)
    if not grads:
        return 0.0
    total = _norm(np.array([_norm(g.data, norm_type) for g in grads]), norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {total}; "
                           f"pass error_if_nonfinite=False to clip anyway")
    coefficient = max_norm / (total + 1e-6)
    if not coefficient >= 1.0:  # NaN too, as torch's clamp(max=1) keeps NaN
        for g in grads:
            xp = backends.get_array_module(g.data)
            g.data = g.data * xp.asarray(coefficient, dtype=g.dtype)
    return total


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place (torch's
    rule): unlike ``clip_grad_norm_`` this changes the direction of the update."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        g.data = backends.get_array_module(g.data).clip(g.data, -clip_value, clip_value).astype(g.dtype, copy=False)
