"""Embedding lookup with a padding row that never learns (PyTorch's ``padding_idx``)."""

from __future__ import annotations

from tinylm.ops.embedding import Embedding


class PaddedEmbedding(Embedding):
    """y[n] = W[ids[n]] as ``Embedding``, but the row ``padding_idx`` is held fixed: its
    gradient, Σ_{n: ids[n] = padding_idx} gy[n], is replaced by 0, so padding positions
    read the row without ever training it."""

    def __init__(self, ids, padding_idx: int):
        super().__init__(ids)
        self.padding_idx = padding_idx

    def backward(self, gy):
        grad_weight = super().backward(gy)  # (V, D), a fresh array
        grad_weight[self.padding_idx] = 0
        return grad_weight
