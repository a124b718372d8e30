# cython: language_level=3
"""The Adam / AdamW update as one Cython loop: the drop-in for ``tinylm/reference/optim.py``.

Same name, signature, meaning and order of floating-point operations as the reference
(see its docstring for the rule). What differs, and why:

- One pass over the parameter: each element's decay, moments and update are done
  while it is in a register, where the reference makes about ten passes over memory
  with NumPy temporaries. The kernel is memory-bound, so passes are what count.
- Threads split the elements (OpenMP, for arrays large enough to be worth it).
- The arrays are updated in place, so the wrapper refuses (rather than copies) any
  array that is not C-contiguous, writeable, of one dtype and one shape.
"""

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.math cimport sqrt

cdef extern from "tinylm_parallel.h" nogil:
    int tinylm_get_num_threads()

PARALLEL_MIN_ELEMENTS = 1 << 16

ctypedef fused real:
    float
    double


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _adam(real[::1] param, const real[::1] grad, real[::1] exp_avg, real[::1] exp_avg_sq,
                double step_size, double bias2_sqrt, double beta1, double beta2, double eps,
                double weight_decay, double decay_factor, bint decoupled, int threads) noexcept nogil:
    cdef Py_ssize_t n = param.shape[0], k
    cdef real g, m, v
    for k in prange(n, schedule="static", num_threads=threads):
        if decoupled:
            param[k] = param[k] * <real>decay_factor
            g = grad[k]
        else:
            g = grad[k] + <real>weight_decay * param[k]
        m = exp_avg[k] + (g - exp_avg[k]) * <real>(1 - beta1)
        v = exp_avg_sq[k] * <real>beta2 + <real>(1 - beta2) * g * g
        exp_avg[k] = m
        exp_avg_sq[k] = v
        param[k] = param[k] - <real>step_size * (m / (<real>sqrt(v) / <real>bias2_sqrt + <real>eps))


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """As ``tinylm.reference.optim.adam_update``: updates param, exp_avg, exp_avg_sq in place."""
    arrays = {"param": param, "grad": grad, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise TypeError(f"adam_update: {name} must be a NumPy array, got {type(value).__name__}")
        if value.dtype != param.dtype or value.shape != param.shape:
            raise ValueError(f"adam_update: {name} is {value.dtype} {value.shape}, param is {param.dtype} {param.shape}")
        if not value.flags.c_contiguous:
            raise ValueError(f"adam_update: {name} must be C-contiguous (it is updated in place)")
    for name in ("param", "exp_avg", "exp_avg_sq"):
        if not arrays[name].flags.writeable:
            raise ValueError(f"adam_update: {name} is read-only")
    if param.dtype != np.float32 and param.dtype != np.float64:
        raise TypeError(f"adam_update: param must be float32 or float64, got {param.dtype}")
    if int(step) < 1:
        raise ValueError(f"adam_update: step counts from 1, got {step}")
    step_size = lr / (1 - beta1 ** step)
    bias2_sqrt = np.sqrt(1 - beta2 ** step)
    threads = tinylm_get_num_threads() if param.size >= PARALLEL_MIN_ELEMENTS else 1
    flat = [a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq)]  # views: C-contiguous, so no copies
    if param.dtype == np.float32:
        _adam[float](*flat, step_size, bias2_sqrt, beta1, beta2, eps, weight_decay,
                     1 - lr * weight_decay, bool(decoupled), threads)
    else:
        _adam[double](*flat, step_size, bias2_sqrt, beta1, beta2, eps, weight_decay,
                      1 - lr * weight_decay, bool(decoupled), threads)
