"""Matrix products, reference versions: the oracle for the packed micro-kernel
(``kernels/cpu/gemm.pyx`` over ``kernels/cpu/tinylm_gemm.h``).

    C = op(A) · op(B)          or, with accumulate,   C += op(A) · op(B)
    op(A) (M, K), op(B) (K, N), C (M, N); op(X) = Xᵀ when transpose_x
    (``gemm`` also adds a bias row, (N,), to every row of the product when given)

The three products of an LSTM layer are all of this form, with W_hh (4H, H):

    forward, per step:     gates_t = h_{t-1} · W_hhᵀ      gemm(h, w_hh, transpose_b=True)
    backward to h:         dh      = dgates_t · W_hh       gemm(dgates, w_hh)
    weight gradient:       dW_hh  += dgates_tᵀ · h_{t-1}  gemm(dgates, h, dw, accumulate=True, transpose_a=True)

The weight is the same at every step, so a fast kernel lays it out once
(``pack_weight``) and reuses the layout (``gemm_packed``). Here a PackedWeight only holds
op(B) as a plain (K, N) copy: the reference has no layout to speak of.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinylm.backends import get_array_module


def _check(op, a_shape, b_shape, out, accumulate):
    if len(a_shape) != 2 or len(b_shape) != 2:
        raise ValueError(f"{op}: needs 2-D matrices, got {a_shape} @ {b_shape}")
    if a_shape[1] != b_shape[0]:
        raise ValueError(f"{op}: {a_shape} @ {b_shape}: inner sizes differ")
    if out is None and accumulate:
        raise ValueError(f"{op}: accumulate=True adds to out, so out must be given")
    if out is not None and out.shape != (a_shape[0], b_shape[1]):
        raise ValueError(f"{op}: out must be {(a_shape[0], b_shape[1])}, got {out.shape}")


def check_bias(op, bias, columns):
    """``bias`` is None or one value per column of the product: (N,)."""
    if bias is not None and tuple(bias.shape) != (columns,):
        raise ValueError(f"{op}: bias must be ({columns},), one value per column of the product, got {bias.shape}")


def gemm(a, b, out=None, accumulate=False, transpose_a=False, transpose_b=False, bias=None):
    """op(a) (M, K) @ op(b) (K, N) -> (M, N), plus ``bias`` (N,) on every row when given
    (a Linear layer's y = x Wᵀ + b: a fast kernel adds it while each block of the product
    is still in cache), written into ``out`` when given (and returned), added to what
    ``out`` holds when ``accumulate``."""
    a_op = a.T if transpose_a else a
    b_op = b.T if transpose_b else b
    _check("gemm", a_op.shape, b_op.shape, out, accumulate)
    check_bias("gemm", bias, b_op.shape[1])
    product = a_op @ b_op
    if bias is not None:
        product += bias
    if out is None:
        return product
    if accumulate:
        out += product
    else:
        out[...] = product
    return out


@dataclass(frozen=True)
class PackedWeight:
    """B (K, N) ready to be multiplied many times; here, B itself (a copy)."""

    matrix: object

    @property
    def shape(self):
        return self.matrix.shape

    def unpack(self):
        return self.matrix.copy()


def pack_weight(w, transpose=False):
    """w (K, N), or (N, K) with ``transpose`` -> PackedWeight of B = w or wᵀ (K, N)."""
    xp = get_array_module(w)
    return PackedWeight(xp.array(w.T if transpose else w))


def gemm_packed(a, packed, out=None, accumulate=False, transpose_a=False):
    """op(a) (M, K) @ B (K, N) -> (M, N) with B from ``pack_weight``; ``out`` and
    ``accumulate`` as in ``gemm``."""
    return gemm(a, packed.matrix, out, accumulate, transpose_a)
