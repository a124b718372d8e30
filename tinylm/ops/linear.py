"""The affine map of a Linear layer as one op: y = x Wᵀ + b."""

from __future__ import annotations

import math

from tinylm import backends
from tinylm.autograd import Function


class Linear(Function):
    """y = x Wᵀ + b for x (..., k), W (m, k) (PyTorch's layout), b (m,) or absent.

    With every leading axis of x flattened into rows, x is (N, k) and y (N, m):

        dL/dx = gy W        (N, m) @ (m, k)
        dL/dW = gyᵀ x       (m, N) @ (N, k): the sum over rows is inside the product
        dL/db = Σₙ gyₙ      the bias is added to every row

    One op instead of a MatMul and an Add: the bias goes into the product's output in
    place (the gemm kernel adds it to each block of the product while that is in cache), so
    no (N, m) temporary is made for it, and its gradient is one column sum.

    The three products go through the ``gemm`` kernel with its transpose flags, so Wᵀ and
    gyᵀ are read in place, never copied: NumPy's ``@`` on the numpy and GPU backends, the
    kernels' OpenMP team on the cython backend (``kernels/cpu/gemm.pyx``).
    """

    def forward(self, x, weight, bias=None):
        rows = math.prod(x.shape[:-1])
        y = backends.kernel("gemm")(x.reshape(rows, x.shape[-1]), weight, transpose_b=True, bias=bias)  # (N, m)
        self.save_for_backward(x, weight)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, gy):
        x, weight = self.saved
        rows = math.prod(x.shape[:-1])
        gemm = backends.kernel("gemm")
        gy_rows = gy.reshape(rows, gy.shape[-1])  # (N, m)
        grad_x = gemm(gy_rows, weight).reshape(x.shape) if self.needs_input_grad[0] else None
        grad_weight = (gemm(gy_rows, x.reshape(rows, x.shape[-1]), transpose_a=True)  # (m, k)
                       if self.needs_input_grad[1] else None)
        grad_bias = gy_rows.sum(axis=0) if len(self.needs_input_grad) > 2 and self.needs_input_grad[2] else None
        return (grad_x, grad_weight) + ((grad_bias,) if len(self.needs_input_grad) > 2 else ())
