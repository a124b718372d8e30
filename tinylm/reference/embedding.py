"""Embedding kernels, reference versions.

Forward is a gather, ``out[n] = weight[ids[n]]``. Its backward is the matching
scatter-add: every position n that read row ``ids[n]`` adds its output gradient to
that row, and a token that appears several times gathers the sum of all its
positions' gradients.
"""

from __future__ import annotations

from tinylm.backends import get_array_module, index_add


def check_ids(op: str, ids, num_embeddings: int) -> None:
    """Ids must be integers in [0, num_embeddings): anything else is an IndexError
    naming the offending id, so a bad id never becomes a silent wrap-around."""
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: ids must be an integer array, got {ids.dtype}")
    if ids.size == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= num_embeddings:
        bad = low if low < 0 else high
        raise IndexError(f"{op}: id {bad} is out of range for a vocabulary of {num_embeddings} "
                         f"(ids must be in [0, {num_embeddings}))")


def embedding_forward(weight, ids):
    """out[n] = weight[ids[n]]: weight (V, D), ids integer of any shape -> (*ids.shape, D)."""
    if weight.ndim != 2:
        raise ValueError(f"embedding_forward: weight must be (num_embeddings, dim), got shape {tuple(weight.shape)}")
    check_ids("embedding_forward", ids, weight.shape[0])
    return weight[ids]


def embedding_backward(grad_output, ids, num_embeddings: int):
    """grad_weight[v] = Σ over positions n with ids[n] == v of grad_output[n].

    grad_output: (*ids.shape, D) float; ids: integer array; returns (num_embeddings, D).
    """
    check_ids("embedding_backward", ids, num_embeddings)
    if tuple(grad_output.shape[:-1]) != tuple(ids.shape):
        raise ValueError(
            f"embedding_backward: grad_output {tuple(grad_output.shape)} does not match ids {tuple(ids.shape)} + (D,)"
        )
    xp = get_array_module(grad_output)
    dim = grad_output.shape[-1]
    grad_weight = xp.zeros((num_embeddings, dim), dtype=grad_output.dtype)
    index_add(grad_weight, ids.reshape(-1), grad_output.reshape(ids.size, dim))  # (N,) rows, (N, D) values
    return grad_weight
