"""Launch wrappers for ``embedding.cu``: the ``cuda`` backend's embedding kernels.

Same names, signatures and meaning as ``tinylm/reference/embedding.py``. Each wrapper
checks everything the kernel assumes (float dtype, ids integral and in [0, V), shapes),
makes the inputs contiguous, allocates the output, then launches; with NumPy arrays the
launch is emulated on the CPU (see ``emulation.py``). ``threads`` and ``max_blocks`` set
the launch geometry (for tests and tuning; the result does not depend on them).
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import array_module_of, as_array, int_scalar
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for
from tinylm.reference.embedding import check_ids

SOURCE = CudaSource("embedding.cu")


def _flat_ids(op: str, ids, num_embeddings: int, xp):
    """ids checked (integer, every one in range, before any cast) -> contiguous int64, flat."""
    ids = as_array(op, "ids", ids, xp, index=True)
    check_ids(op, ids, num_embeddings)
    return xp.ascontiguousarray(ids.reshape(-1), dtype=np.int64), ids.shape


def embedding_forward(weight, ids, *, threads: int | None = None, max_blocks: int | None = None):
    """out[n] = weight[ids[n]]: weight (V, D) float32/float64, ids integers of any shape
    -> (*ids.shape, D)."""
    op = "embedding_forward"
    xp = array_module_of(op, "weight", weight)
    if weight.ndim != 2:
        raise ValueError(f"{op}: weight must be (num_embeddings, dim), got shape {tuple(weight.shape)}")
    suffix = float_suffix(op, "weight", weight)
    flat_ids, ids_shape = _flat_ids(op, ids, weight.shape[0], xp)
    dim = weight.shape[1]
    out = xp.empty(tuple(ids_shape) + (dim,), dtype=weight.dtype)
    elements = flat_ids.size * dim
    threads = threads_for(weight, threads)
    blocks = blocks_for(weight, -(-elements // threads), max_blocks)
    SOURCE.launch(f"{op}_{suffix}", blocks, threads,
                  (xp.ascontiguousarray(weight), flat_ids, out, np.int64(elements), np.int64(dim)))
    return out


def embedding_backward(grad_output, ids, num_embeddings: int, *, threads: int | None = None,
                       max_blocks: int | None = None):
    """grad_weight[v] = Σ over positions n with ids[n] == v of grad_output[n]:
    grad_output (*ids.shape, D) float32/float64 -> (num_embeddings, D)."""
    op = "embedding_backward"
    xp = array_module_of(op, "grad_output", grad_output)
    suffix = float_suffix(op, "grad_output", grad_output)
    num_embeddings = int_scalar(op, "num_embeddings", num_embeddings, 0, None)
    flat_ids, ids_shape = _flat_ids(op, ids, num_embeddings, xp)
    if grad_output.ndim < 1 or tuple(grad_output.shape[:-1]) != tuple(ids_shape):
        raise ValueError(f"{op}: grad_output {tuple(grad_output.shape)} does not match ids {tuple(ids_shape)} + (D,)")
    dim = grad_output.shape[-1]
    grad_weight = xp.zeros((num_embeddings, dim), dtype=grad_output.dtype)
    elements = flat_ids.size * dim
    threads = threads_for(grad_output, threads)
    blocks = blocks_for(grad_output, -(-elements // threads), max_blocks)
    SOURCE.launch(f"{op}_{suffix}", blocks, threads,
                  (xp.ascontiguousarray(grad_output), flat_ids, grad_weight, np.int64(elements), np.int64(dim)))
    return grad_weight
