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

# Below this many elements a kernel runs on one thread: waking the OpenMP team costs a
# few microseconds, which a small array does not win back. The threshold can be this low
# because the cython backend runs one thread pool (tinylm/backends.py): NumPy's BLAS on
# one thread, the matrix products on this team too. Beside OpenBLAS's own threads, a team
# woken while they still spun was ruinous (every kernel parallel from 65,536 elements: a
# transformer step 135-187 ms instead of 57), and the threshold was 2**21. The default
# transformer's training step, best of 40, threshold 2**21 / 2**17 / 2**16 / 2**15 / 0:
# 53 / 46 / 46 / 45 / 46 ms (benchmarks/NOTES.md, "Threads"); 2**16 is the middle of the
# flat part.
_parallel_min_elements = int(os.environ.get("TINYLM_PARALLEL_MIN_ELEMENTS", 1 << 16))


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
    """Kernels on arrays of at least ``elements`` elements use every thread (default 2**16,
    or ``$TINYLM_PARALLEL_MIN_ELEMENTS``); 0 makes every kernel parallel."""
    global _parallel_min_elements
    if int(elements) < 0:
        raise ValueError(f"set_parallel_threshold: need a count >= 0, got {elements}")
    _parallel_min_elements = int(elements)
