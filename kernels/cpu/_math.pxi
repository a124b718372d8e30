# Shared by the Cython kernels (``include "_math.pxi"``): the fused float type and the
# elementwise maths each kernel needs, with float32 going to tinylm_math.h's
# vectorisable exp and float64 to libm.

cimport cython
from libc.math cimport exp, log, logf, sqrt, sqrtf

cdef extern from "tinylm_math.h" nogil:
    float tinylm_expf(float x)

cdef extern from "tinylm_parallel.h" nogil:
    int tinylm_get_num_threads()  # OpenMP's thread count, or 1 in a serial build

ctypedef fused real:
    float
    double


cdef inline real _exp(real x) noexcept nogil:
    if real is float:
        return tinylm_expf(x)
    else:
        return exp(x)


cdef inline real _log(real x) noexcept nogil:
    if real is float:
        return logf(x)
    else:
        return log(x)


cdef inline real _sqrt(real x) noexcept nogil:
    if real is float:
        return sqrtf(x)
    else:
        return sqrt(x)


@cython.cdivision(True)  # no zero-division check: it would stop the loops from vectorising
cdef inline real _sigmoid(real x) noexcept nogil:
    # 1 / (1 + e^-x): for very negative x, e^-x is inf and the result 0, as it should be.
    return (<real>1) / ((<real>1) + _exp(-x))  # <real>1: a bare 1 would be a C double


@cython.cdivision(True)
cdef inline real _tanh(real x) noexcept nogil:
    # tanh x = 2 σ(2x) - 1: one exp, much faster than libm's tanh, same to rounding.
    return (<real>2) / ((<real>1) + _exp((<real>-2) * x)) - (<real>1)
