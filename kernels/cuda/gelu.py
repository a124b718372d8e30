"""Launch wrappers for ``gelu.cu``: the ``cuda`` backend's GELU (tanh approximation).

Same names, signatures and meaning as ``tinylm/reference/gelu.py``: elementwise over x
of any shape, float32 or float64. The backward reads grad_y[k] for every element k of
x, so grad_y must have x's shape and dtype. ``threads`` and ``max_blocks`` set the
launch geometry (for tests and tuning; the result does not depend on them).
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import array_module_of, as_array, same_dtype
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for

SOURCE = CudaSource("gelu.cu")


def gelu_forward(x, *, threads: int | None = None, max_blocks: int | None = None):
    """y = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))), elementwise, any shape."""
    op = "gelu_forward"
    xp = array_module_of(op, "x", x)
    suffix = float_suffix(op, "x", x)
    y = xp.empty(x.shape, dtype=x.dtype)
    threads = threads_for(x, threads)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(x, -(-x.size // threads), max_blocks), threads,
                  (xp.ascontiguousarray(x), y, np.int64(x.size)))
    return y


def gelu_backward(grad_y, x, *, threads: int | None = None, max_blocks: int | None = None):
    """dL/dx = dL/dy · dy/dx, elementwise."""
    op = "gelu_backward"
    xp = array_module_of(op, "x", x)
    suffix = float_suffix(op, "x", x)
    grad_y = as_array(op, "grad_y", grad_y, xp)
    same_dtype(op, "x", x, grad_y=grad_y)
    if tuple(grad_y.shape) != tuple(x.shape):
        raise ValueError(f"{op}: grad_y {tuple(grad_y.shape)} must have x's shape {tuple(x.shape)}")
    grad_x = xp.empty(x.shape, dtype=x.dtype)
    threads = threads_for(x, threads)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(x, -(-x.size // threads), max_blocks), threads,
                  (xp.ascontiguousarray(grad_y), xp.ascontiguousarray(x), grad_x, np.int64(x.size)))
    return grad_x
