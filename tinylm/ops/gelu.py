"""GELU (tanh approximation) as one op, served by the ``gelu_*`` kernels:
``tinylm/reference/gelu.py``, ``kernels/cpu/gelu.pyx``, ``kernels/cuda/gelu.cu``."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function


class GELU(Function):
    """GELU with the tanh approximation (GPT-2's, PyTorch's ``approximate='tanh'``):

        y = ½ x (1 + tanh u),   u = c (x + 0.044715 x³),   c = √(2/π)

    By the product and chain rules, with t = tanh u and dt/du = 1 - t²:

        dy/dx = ½ (1 + t) + ½ x (1 - t²) · c (1 + 3 · 0.044715 x²)

    computed by the ``gelu_*`` kernels (``tinylm/reference/gelu.py``).
    """

    def forward(self, x):
        self.save_for_backward(x)
        return backends.kernel("gelu_forward")(x)

    def backward(self, gy):
        (x,) = self.saved
        return backends.kernel("gelu_backward")(gy, x)


def gelu(x, approximate: str = "tanh"):
    """GELU; only the tanh approximation is implemented (``approximate='tanh'``)."""
    if approximate != "tanh":
        raise ValueError(f"gelu: approximate={approximate!r} is not supported; tinylm implements 'tanh'")
    return GELU()(x)
