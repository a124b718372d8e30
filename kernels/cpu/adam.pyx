# cython: language_level=3
"""The Adam / AdamW update as one Cython loop: the drop-in for ``tinylm/reference/adam.py``.

Same name, signature, meaning and order of floating-point operations as the reference
(see its docstring for the rule). What differs, and why:

- One pass over the parameter: each element's decay, moments and update are done
  while it is in a register, where the reference makes about ten passes over memory
  with NumPy temporaries. The kernel is memory-bound, so passes are what count.
- Threads take one contiguous chunk each (OpenMP, for arrays large enough to be worth
  it), and each chunk is a branch-free loop over raw pointers that GCC vectorises (a
  branch inside one ``prange`` loop is not vectorised: see benchmarks/NOTES.md).
- The arrays are updated in place, so the wrapper refuses (rather than copies) any
  array that is not C-contiguous, writeable, of one dtype and one shape.
"""

import numpy as np

cimport cython
from cython.parallel cimport prange
include "_math.pxi"

from tinylm.kernels import threads_for
from tinylm.kernels.checks import flag, float_dtype, int_scalar, real_scalar


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _adam_chunk(real* param, const real* grad, real* exp_avg, real* exp_avg_sq, Py_ssize_t start,
                      Py_ssize_t stop, real step_size, real bias2_sqrt, real one_minus_beta1, real beta2,
                      real one_minus_beta2, real eps, real weight_decay, real decay_factor, bint decoupled) noexcept nogil:
    """Elements [start, stop): plain loops over raw pointers, no branch inside, so that the
    compiler can vectorise them. The constants arrive rounded from double, as the
    reference's Python floats are."""
    cdef Py_ssize_t k
    cdef real g, m, v
    if decoupled:
        for k in range(start, stop):
            param[k] = param[k] * decay_factor
            g = grad[k]
            m = exp_avg[k] + (g - exp_avg[k]) * one_minus_beta1
            v = exp_avg_sq[k] * beta2 + one_minus_beta2 * g * g
            exp_avg[k] = m
            exp_avg_sq[k] = v
            param[k] = param[k] - step_size * (m / (_sqrt(v) / bias2_sqrt + eps))
    else:
        for k in range(start, stop):
            g = grad[k] + weight_decay * param[k]
            m = exp_avg[k] + (g - exp_avg[k]) * one_minus_beta1
            v = exp_avg_sq[k] * beta2 + one_minus_beta2 * g * g
            exp_avg[k] = m
            exp_avg_sq[k] = v
            param[k] = param[k] - step_size * (m / (_sqrt(v) / bias2_sqrt + eps))


def _adam(real[::1] param, const real[::1] grad, real[::1] exp_avg, real[::1] exp_avg_sq,
                double step_size, double bias2_sqrt, double beta1, double beta2, double eps,
                double weight_decay, double decay_factor, bint decoupled, int threads):
    cdef Py_ssize_t n = param.shape[0], chunk, c, start, stop
    if n == 0:
        return
    chunk = (n + threads - 1) // threads
    for c in prange(threads, schedule="static", num_threads=threads, nogil=True):  # one contiguous chunk per thread
        start = c * chunk
        stop = min(start + chunk, n)
        if start < stop:
            _adam_chunk(&param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], start, stop, <real>step_size,
                        <real>bias2_sqrt, <real>(1 - beta1), <real>beta2, <real>(1 - beta2), <real>eps,
                        <real>weight_decay, <real>decay_factor, decoupled)


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """As ``tinylm.reference.adam.adam_update``: updates param, exp_avg, exp_avg_sq in place."""
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
        for other in ("grad", "exp_avg", "exp_avg_sq"):  # written arrays must not overlap any other
            if other != name and arrays[other].size and np.may_share_memory(arrays[name], arrays[other]):
                if not (name == "param" and other == "grad" and arrays[name] is arrays[other]):
                    raise ValueError(f"adam_update: {name} and {other} share memory; each must be its own array")
    float_dtype("adam_update", "param", param)
    step = int_scalar("adam_update", "step", step, 1, None)  # counts from 1
    lr, beta1, beta2, eps, weight_decay = (real_scalar("adam_update", name, value) for name, value in (
        ("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps), ("weight_decay", weight_decay)))
    decoupled = flag("adam_update", "decoupled", decoupled)
    if not decoupled and weight_decay == 0:
        # The reference skips g + 0·p: take the decoupled loop with factor 1 (p·1 = p
        # exactly), so an inf/NaN param does not turn the moments into NaN via 0·inf.
        decoupled = True
    step_size = lr / (1 - beta1 ** step)
    bias2_sqrt = np.sqrt(1 - beta2 ** step)
    threads = threads_for(param.size)
    flat = [a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq)]  # views: C-contiguous, so no copies
    _adam(*flat, step_size, bias2_sqrt, beta1, beta2, eps, weight_decay,
                 1 - lr * weight_decay, decoupled, threads)
