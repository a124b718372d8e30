# cython: language_level=3
"""Whether OpenMP is compiled in, and the kernels' thread count."""

cdef extern from "tinylm_parallel.h" nogil:
    int tinylm_openmp_enabled()
    int tinylm_get_num_threads()
    void tinylm_set_num_threads(int n)


def openmp_enabled():
    return tinylm_openmp_enabled()


def get_num_threads():
    return tinylm_get_num_threads()


def set_num_threads(int n):
    tinylm_set_num_threads(n)
