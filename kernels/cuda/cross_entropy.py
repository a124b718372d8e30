"""Launch wrappers for ``cross_entropy.cu``: the ``cuda`` backend's fused cross-entropy.

Same names, signatures and meaning as ``tinylm/reference/cross_entropy.py``: logits
(N, C), integer targets (N,) in [0, C) or equal to ``ignore_index``. ``threads`` and
``max_blocks`` set the launch geometry (for tests and tuning).
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import INT64_RANGE, array_module_of, as_array, int_scalar, same_dtype
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for
from tinylm.reference.cross_entropy import check_targets

SOURCE = CudaSource("cross_entropy.cu")


def _checked(op: str, logits, targets, ignore_index, xp):
    suffix = float_suffix(op, "logits", logits)
    targets = as_array(op, "targets", targets, xp, index=True)
    ignore_index = int_scalar(op, "ignore_index", ignore_index, *INT64_RANGE)  # passed as a C long long
    check_targets(op, logits, targets, ignore_index)  # shapes, integer dtype, range: IndexError naming the target
    if logits.shape[1] == 0 and logits.shape[0] > 0:
        raise ValueError(f"{op}: logits {tuple(logits.shape)} has no classes")
    # Every target is now in [0, C) or equal to ignore_index, so the cast to int64 keeps its value.
    return suffix, xp.ascontiguousarray(targets, dtype=np.int64)


def cross_entropy_forward(logits, targets, ignore_index: int, *, threads: int | None = None,
                          max_blocks: int | None = None):
    """-> (losses (N,), logsumexp (N,)) in the logits' dtype; 0 loss on ignored rows."""
    op = "cross_entropy_forward"
    xp = array_module_of(op, "logits", logits)
    suffix, targets = _checked(op, logits, targets, ignore_index, xp)
    rows, classes = logits.shape
    losses, logsumexp = xp.empty(rows, dtype=logits.dtype), xp.empty(rows, dtype=logits.dtype)
    threads = threads_for(logits, threads, row_length=classes)
    SOURCE.launch(f"{op}_{suffix}", blocks_for(logits, rows, max_blocks), threads,
                  (xp.ascontiguousarray(logits), targets, losses, logsumexp, np.int64(rows), np.int64(classes),
                   np.int64(ignore_index)))
    return losses, logsumexp


def cross_entropy_backward(grad_losses, logits, targets, logsumexp, ignore_index: int, *, threads: int | None = None,
                           max_blocks: int | None = None):
    """dL/dlogits = (softmax - onehot) · dL/dloss_n per row, 0 on ignored rows."""
    op = "cross_entropy_backward"
    xp = array_module_of(op, "logits", logits)
    suffix, targets = _checked(op, logits, targets, ignore_index, xp)
    grad_losses, logsumexp = as_array(op, "grad_losses", grad_losses, xp), as_array(op, "logsumexp", logsumexp, xp)
    rows, classes = logits.shape
    for name, value in (("grad_losses", grad_losses), ("logsumexp", logsumexp)):
        if tuple(value.shape) != (rows,):
            raise ValueError(f"{op}: {name} {tuple(value.shape)} must be (N,) = ({rows},) "
                             f"for logits {tuple(logits.shape)}")
    same_dtype(op, "logits", logits, grad_losses=grad_losses, logsumexp=logsumexp)
    grad_logits = xp.empty((rows, classes), dtype=logits.dtype)
    threads = threads_for(logits, threads)
    blocks = blocks_for(logits, -(-rows * classes // threads), max_blocks)
    SOURCE.launch(f"{op}_{suffix}", blocks, threads,
                  (xp.ascontiguousarray(grad_losses), xp.ascontiguousarray(logits), targets,
                   xp.ascontiguousarray(logsumexp), grad_logits, np.int64(rows), np.int64(classes),
                   np.int64(ignore_index)))
    return grad_logits
