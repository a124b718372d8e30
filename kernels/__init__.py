"""tinylm's compiled kernels (installed as ``tinylm.kernels``).

``cpu/``: Cython kernels, built by ``pip install`` with OpenMP when the compiler
accepts ``-fopenmp`` and serially otherwise. Each is a drop-in for the reference
kernel of the same name in ``tinylm.reference``.
"""

from __future__ import annotations


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
