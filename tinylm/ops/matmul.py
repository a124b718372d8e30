"""Batched matrix multiplication."""

from __future__ import annotations

import math

from tinylm import backends
from tinylm.autograd import Function
from tinylm.ops.broadcasting import as_operands, broadcast_shape, sum_to


class MatMul(Function):
    """Y = A @ B for A of shape (..., n, k) and B of shape (..., k, m).

    Each entry Y[i, j] = Σ_k A[i, k] B[k, j], so dY[i, j]/dA[i, k] = B[k, j] and

        dL/dA[i, k] = Σ_j gY[i, j] B[k, j]   =  (gY @ Bᵀ)[i, k]
        dL/dB[k, j] = Σ_i A[i, k] gY[i, j]   =  (Aᵀ @ gY)[k, j]

    The leading (batch) axes broadcast like any binary op, so both results are summed
    back to their input's shape with ``sum_to``.

    When b is one matrix (a 2-D b, a itself 2-D or with batch axes folded into its rows)
    the products go through the ``gemm`` kernel, whose transpose flags read bᵀ and aᵀ in
    place (the kernels' OpenMP team on the cython backend); a batch of b's through ``@``.
    """

    def forward(self, a, b):
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: {tuple(a.shape)} @ {tuple(b.shape)}: inner sizes differ")
        broadcast_shape("matmul (batch axes)", a.shape[:-2], b.shape[:-2])
        self.save_for_backward(a, b)
        if _one_matrix(a, b):  # (..., n, k) @ (k, m): one large product, not one per batch entry
            rows = math.prod(a.shape[:-1])
            y = backends.kernel("gemm")(a.reshape(rows, a.shape[-1]), b)  # (N, m)
            return y.reshape(a.shape[:-1] + (b.shape[-1],))
        return a @ b

    def backward(self, gy):
        a, b = self.saved
        if _one_matrix(a, b) and gy.dtype == a.dtype:  # a weight shared by every row: the formulas on (rows, k)
            gemm = backends.kernel("gemm")
            rows = math.prod(a.shape[:-1])
            rows_a, rows_gy = a.reshape(rows, a.shape[-1]), gy.reshape(rows, gy.shape[-1])  # (N, k), (N, m)
            ga = gemm(rows_gy, b, transpose_b=True).reshape(a.shape) if self.needs_input_grad[0] else None
            gb = gemm(rows_a, rows_gy, transpose_a=True) if self.needs_input_grad[1] else None  # Σ over all rows
            return ga, gb
        ga = sum_to(gy @ b.swapaxes(-1, -2), a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(a.swapaxes(-1, -2) @ gy, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


def _one_matrix(a, b) -> bool:
    """Whether a (..., n, k) @ b (k, m) is one (rows, k) @ (k, m) product for ``gemm``:
    b is 2-D, and both are float32 or both float64 (the kernel's types; ``@`` serves the rest)."""
    return b.ndim == 2 and a.ndim >= 2 and a.dtype == b.dtype and a.dtype.char in "fd"


def matmul(a, b):
    """``a @ b`` with NumPy's rules: 1-D operands are treated as a row (left) or a
    column (right) vector and that axis is dropped from the result."""
    from tinylm.ops.shape import reshape

    a, b = as_operands("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: operands must have at least one axis; use * for scalars")
    a2 = reshape(a, 1, a.shape[0]) if a.ndim == 1 else a  # (k,) -> (1, k)
    b2 = reshape(b, b.shape[0], 1) if b.ndim == 1 else b  # (k,) -> (k, 1)
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: inner sizes differ")
    y = MatMul()(a2, b2)
    if a.ndim == 1:
        y = reshape(y, *(y.shape[:-2] + y.shape[-1:]))  # drop the row axis
    if b.ndim == 1:
        y = reshape(y, *y.shape[:-1])  # drop the column axis
    return y
