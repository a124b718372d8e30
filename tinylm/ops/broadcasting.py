"""Broadcasting, and the one helper that undoes it for gradients.

When ``x`` of shape (3, 1) meets ``y`` of shape (4,), NumPy acts as if ``x`` were
copied along axis 1 and ``y`` along a new axis 0, giving shape (3, 4). A copied
element contributes to every output it was copied into, so its gradient is the *sum*
of the gradients of those outputs. ``sum_to`` performs that sum: it is the backward of
broadcasting, and every binary op sends its input gradients through it.
"""

from __future__ import annotations

import numpy as np


def sum_to(grad, shape: tuple):
    """Sum ``grad`` (a broadcast result's gradient) down to ``shape``.

    Leading axes that broadcasting added are summed away; axes where ``shape`` has
    size 1 but ``grad`` does not are summed with ``keepdims`` so they stay size 1.
    """
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    lead = grad.ndim - len(shape)
    stretched = tuple(lead + i for i, size in enumerate(shape) if size == 1 and grad.shape[lead + i] != 1)
    summed = grad.sum(axis=tuple(range(lead)) + stretched, keepdims=True)
    return summed.reshape(shape) if lead else summed


def broadcast_shape(op: str, *shapes: tuple) -> tuple:
    """The shape NumPy broadcasting gives, or a ValueError naming ``op`` and the shapes."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        listed = " and ".join(str(tuple(s)) for s in shapes)
        raise ValueError(f"{op}: shapes {listed} cannot be broadcast together") from None


def as_operands(op: str, a, b):
    """Turn the two operands of a binary op into tensors of one dtype.

    A Python or NumPy scalar takes the dtype of the tensor beside it (as in PyTorch,
    ``x * 0.5`` stays float32). Two tensors must already share a dtype: tinylm does
    not promote silently, so a float64 tensor meeting a float32 one is an error.
    """
    from tinylm.autograd import Tensor  # here, not at import: autograd imports ops

    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: needs at least one Tensor, got {type(a).__name__} and {type(b).__name__}")
    a = a if isinstance(a, Tensor) else _scalar_like(op, a, b)
    b = b if isinstance(b, Tensor) else _scalar_like(op, b, a)
    if a.dtype != b.dtype:
        raise TypeError(
            f"{op}: dtypes differ ({a.dtype} {a.shape} and {b.dtype} {b.shape}); convert one with .astype(). "
            "tinylm never promotes silently: a hidden conversion costs a copy, and mixing float32 "
            "into float64 quietly loses the precision float64 was chosen for"
        )
    return a, b


def _scalar_like(op: str, value, like):
    from tinylm import backends
    from tinylm.autograd import Tensor

    if isinstance(value, (list, tuple)) or (hasattr(value, "shape") and getattr(value, "ndim", 0) > 0):
        raise TypeError(f"{op}: operand {type(value).__name__} is not a Tensor; wrap arrays with tinylm.tensor()")
    if isinstance(value, (float, np.floating)) and not np.issubdtype(like.dtype, np.floating):
        raise TypeError(f"{op}: float scalar {value!r} with a {like.dtype} tensor; convert the tensor with .float()")
    xp = backends.get_array_module(like.data)
    return Tensor(xp.asarray(value, dtype=like.dtype))
