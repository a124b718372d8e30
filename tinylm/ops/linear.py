"""The affine map of a Linear layer as one op: y = x Wᵀ + b."""

from __future__ import annotations

import math

from tinylm.autograd import Function


class Linear(Function):
    """y = x Wᵀ + b for x (..., k), W (m, k) (PyTorch's layout), b (m,) or absent.

    With every leading axis of x flattened into rows, x is (N, k) and y (N, m):

        dL/dx = gy W        (N, m) @ (m, k)
        dL/dW = gyᵀ x       (m, N) @ (N, k): the sum over rows is inside the product
        dL/db = Σₙ gyₙ      the bias is added to every row

    One op instead of a MatMul and an Add: the bias goes into the product's output in
    place, so no (N, m) temporary is made for it, and its gradient is one column sum.
    """

    def forward(self, x, weight, bias=None):
        rows = math.prod(x.shape[:-1])
        y = x.reshape(rows, x.shape[-1]) @ weight.T  # (N, m)
        if bias is not None:
            y += bias
        self.save_for_backward(x, weight)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, gy):
        x, weight = self.saved
        rows = math.prod(x.shape[:-1])
        gy_rows = gy.reshape(rows, gy.shape[-1])  # (N, m)
        grad_x = (gy_rows @ weight).reshape(x.shape) if self.needs_input_grad[0] else None
        grad_weight = gy_rows.T @ x.reshape(rows, x.shape[-1]) if self.needs_input_grad[1] else None
        grad_bias = gy_rows.sum(axis=0) if len(self.needs_input_grad) > 2 and self.needs_input_grad[2] else None
        return (grad_x, grad_weight) + ((grad_bias,) if len(self.needs_input_grad) > 2 else ())
