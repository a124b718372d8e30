"""GELU as one op. The tanh approximation is served by the ``gelu_*`` kernels:
``tinylm/reference/gelu.py``, ``kernels/cpu/gelu.pyx``, ``kernels/cuda/gelu.cu``; the
exact GELU (with erf) by the reference alone, on every backend."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function
from tinylm.reference.gelu import gelu_exact_backward, gelu_exact_forward


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


class ExactGELU(Function):
    """GELU as defined, PyTorch's default (``approximate='none'``): x times the standard
    normal CDF Φ at x,

        y = x Φ(x),   Φ(x) = ½ (1 + erf(x / √2))

    By the product rule, with dΦ/dx = φ(x) = e^(-x²/2) / √(2π) the normal density:

        dy/dx = Φ(x) + x φ(x)

    computed by ``gelu_exact_*`` in ``tinylm/reference/gelu.py`` (no compiled kernel).
    """

    def forward(self, x):
        self.save_for_backward(x)
        return gelu_exact_forward(x)

    def backward(self, gy):
        (x,) = self.saved
        return gelu_exact_backward(gy, x)


def gelu(x, approximate: str = "tanh"):
    """GELU: ``approximate='tanh'`` (the default here and in ``Tensor.gelu``: GPT-2's, and
    the compiled kernels') or ``'none'``, the exact one. ``F.gelu`` and ``nn.GELU``
    default to ``'none'``, as PyTorch."""
    if approximate == "tanh":
        return GELU()(x)
    if approximate == "none":
        return ExactGELU()(x)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
