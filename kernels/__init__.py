"""tinylm's compiled kernels (installed as ``tinylm.kernels``).

``cpu/``: Cython kernels, built by ``pip install`` with OpenMP when the compiler
accepts ``-fopenmp`` and serially otherwise. Each is a drop-in for the reference
kernel of the same name in ``tinylm.reference``.

``cuda/``: CUDA kernels and their launch wrappers (see ``cuda/README.md``).

``checks.py``: the argument checks that the wrappers of both run before any compiled
loop or launch, one meaning each.
"""

from __future__ import annotations

import os

# Below this many elements a kernel runs on one thread. OpenMP's threads and OpenBLAS's
# compete for the cores: a kernel's thread team woken while BLAS's threads still spin
# slows training down (benchmarks/NOTES.md). Two million elements, more than any
# activation of the default models, keeps parallel threads for big arrays, where they
# pay (Adam over millions of parameters).
_parallel_min_elements = int(os.environ.get("TINYLM_PARALLEL_MIN_ELEMENTS", 1 << 21))


def openmp_enabled() -> bool:
    """True when the Cython kernels were compiled with OpenMP."""
    from tinylm.kernels.cpu import _parallel

    return bool(_parallel.openmp_enabled())


def get_num_threads() -> int:
    """The number of threads the Cython kernels use (1 without OpenMP)."""
    from tinylm.kernels.cpu import _parallel

    return _parallel.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the Cython kernels (``OMP_NUM_THREADS`` sets the start value)."""
    from tinylm.kernels.cpu import _parallel

    if int(n) < 1:
        raise ValueError(f"set_num_threads: need at least 1 thread, got {n}")
    _parallel.set_num_threads(int(n))


def threads_for(elements: int) -> int:
    """How many threads a kernel uses for ``elements`` elements: all of them for a big
    array, one below the parallel threshold (see ``set_parallel_threshold``)."""
    return get_num_threads() if elements >= _parallel_min_elements else 1


def get_parallel_threshold() -> int:
    return _parallel_min_elements


def set_parallel_threshold(elements: int) -> None:
    """Kernels on arrays of at least ``elements`` elements use every thread (default 2**21,
    or ``$TINYLM_PARALLEL_MIN_ELEMENTS``); 0 makes every kernel parallel."""
    global _parallel_min_elements
    if int(elements) < 0:
        raise ValueError(f"set_parallel_threshold: need a count >= 0, got {elements}")
    _parallel_min_elements = int(elements)
