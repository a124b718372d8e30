"""Embedding lookup: rows of a weight matrix picked by token ids."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function, Tensor
from tinylm.reference.embedding import check_ids


class Embedding(Function):
    """y[n] = W[ids[n]]: a gather, so y depends on row v of W only at the positions
    whose id is v, with derivative 1. Hence dL/dW[v] = Σ_{n: ids[n] = v} gy[n], a
    scatter-add, done by the ``embedding_backward`` kernel of the current backend."""

    def __init__(self, ids):
        self.ids = ids

    def forward(self, weight):
        self.num_embeddings = weight.shape[0]
        return backends.kernel("embedding_forward")(weight, self.ids)

    def backward(self, gy):
        return backends.kernel("embedding_backward")(gy, self.ids, self.num_embeddings)


def embedding(ids, weight):
    """Look up ``weight`` (V, D) at integer ``ids`` of any shape: result (*ids.shape, D).
    Argument order as PyTorch's ``F.embedding(input, weight)``."""
    ids_array = ids.data if isinstance(ids, Tensor) else ids
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got shape {weight.shape}")
    if not hasattr(ids_array, "dtype"):
        ids_array = backends.get_array_module(weight.data).asarray(ids_array)
    check_ids("embedding", ids_array, weight.shape[0])
    return Embedding(ids_array)(weight)
