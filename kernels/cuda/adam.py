"""Launch wrapper for ``adam.cu``: the ``cuda`` backend's fused Adam / AdamW update.

Same name, signature and meaning as ``tinylm/reference/adam.py``'s ``adam_update``: it
updates ``param``, ``exp_avg`` and ``exp_avg_sq`` in place. Because it works in place it
refuses, rather than copies, arrays that are not C-contiguous, writable, of param's
dtype and shape, or that overlap one another.
"""

from __future__ import annotations

import math

import numpy as np

from tinylm.kernels.checks import array_module_of, as_array, flag, int_scalar, real_scalar
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for

SOURCE = CudaSource("adam.cu")


def adam_update(param, grad, exp_avg, exp_avg_sq, step: int, lr: float, beta1: float, beta2: float,
                eps: float, weight_decay: float, decoupled: bool, *, threads: int | None = None,
                max_blocks: int | None = None) -> None:
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step, in place."""
    op = "adam_update"
    xp = array_module_of(op, "param", param)
    suffix = float_suffix(op, "param", param)
    arrays = {"param": param, "grad": grad, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    for name, value in arrays.items():
        as_array(op, name, value, xp)  # an array, of param's module
        if value.dtype != param.dtype:
            raise TypeError(f"{op}: {name} is {value.dtype}, param is {param.dtype}")
        if value.shape != param.shape:
            raise ValueError(f"{op}: {name} has shape {tuple(value.shape)}, param {tuple(param.shape)}")
        if not value.flags.c_contiguous:
            raise ValueError(f"{op}: {name} must be C-contiguous (it is updated in place)")
    for name in ("param", "exp_avg", "exp_avg_sq"):
        if xp is np and not arrays[name].flags.writeable:
            raise ValueError(f"{op}: {name} is read-only")
        for other in arrays:
            if other != name and arrays[other].size and xp.may_share_memory(arrays[name], arrays[other]):
                raise ValueError(f"{op}: {name} and {other} share memory; each must be its own array")
    step = int_scalar(op, "step", step, 1, None)  # counts from 1
    lr, beta1, beta2, eps, weight_decay = (real_scalar(op, name, value) for name, value in (
        ("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps), ("weight_decay", weight_decay)))
    decoupled = flag(op, "decoupled", decoupled)
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"{op}: betas must be in [0, 1), got ({beta1}, {beta2})")
    real = param.dtype.type
    step_size = lr / (1 - beta1**step)
    bias2_sqrt = math.sqrt(1 - beta2**step)
    count = param.size
    threads = threads_for(param, threads)
    blocks = blocks_for(param, -(-count // threads), max_blocks)
    flat = [a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq)]  # C-contiguous: views, no copies
    SOURCE.launch(f"{op}_{suffix}", blocks, threads,
                  (*flat, np.int64(count), real(step_size), real(bias2_sqrt), real(1 - beta1), real(beta2),
                   real(1 - beta2), real(eps), real(weight_decay), real(1 - lr * weight_decay),
                   np.int32(decoupled)))
