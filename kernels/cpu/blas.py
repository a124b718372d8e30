"""NumPy's own BLAS, for Cython kernels that multiply matrices inside a ``nogil`` loop.

The LSTM layer kernels run a (B, H) @ (H, 4H) product at every time step. Called through
``np.matmul`` that product costs a trip through the interpreter per step; called from C
it does not. The C function is the one NumPy itself calls: ``cblas_sgemm`` /
``cblas_dgemm`` of the OpenBLAS that NumPy loaded, found here by name. Using NumPy's
library (and not, say, SciPy's, which bundles a second OpenBLAS) keeps one BLAS thread
pool: two pools on two cores spin against each other.

What is looked for: a loaded OpenBLAS (threadpoolctl lists the loaded BLAS libraries and
their files), preferably the one inside NumPy's installation, exporting
``{prefix}cblas_sgemm{suffix}`` with prefix "scipy_" or "" and suffix "64_" or "" (NumPy's
wheels carry ``scipy_cblas_sgemm64_``). Its integer width comes from the library itself:
``openblas_get_config()`` names USE64BITINT when its BLAS integers are 64-bit. Anything
else (MKL, Accelerate, no symbol found, ``TINYLM_NUMPY_BLAS=0``) gives ``None``, and the
kernels fall back to calling ``np.matmul`` once per step: same results, a little slower.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CBlas:
    """Addresses of ``cblas_sgemm``, ``cblas_dgemm``, ``cblas_sgemv``, ``cblas_dgemv`` and the
    width of their integers. (A gemm of one row is several times slower in OpenBLAS than
    the gemv it amounts to, which NumPy calls for it.)"""

    sgemm: int
    dgemm: int
    sgemv: int
    dgemv: int
    int64: bool
    library: str
    threads: object = None  # ``openblas_get_num_threads`` as a ctypes function, or None

    def thread_count(self) -> int:
        """How many threads this OpenBLAS multiplies on now (1 where that cannot be read)."""
        return int(self.threads()) if self.threads is not None else 1


def _numpy_openblas_files() -> list[str]:
    import numpy
    from threadpoolctl import threadpool_info

    files = [info["filepath"] for info in threadpool_info() if info.get("internal_api") == "openblas"]
    numpy_root = os.path.dirname(os.path.dirname(os.path.abspath(numpy.__file__)))
    inside_numpy = [f for f in files if os.path.abspath(f).startswith(os.path.join(numpy_root, "numpy"))]
    # NumPy's own copy when it has one (numpy.libs, numpy/.dylibs); otherwise the one loaded.
    return inside_numpy or (files if len(files) == 1 else [])


def _find_in(path: str) -> CBlas | None:
    try:
        library = ctypes.CDLL(path)  # already loaded by NumPy: this returns the same handle
    except OSError:
        return None
    for prefix in ("scipy_", ""):
        for suffix in ("64_", ""):
            try:
                functions = [getattr(library, f"{prefix}cblas_{name}{suffix}")
                             for name in ("sgemm", "dgemm", "sgemv", "dgemv")]
                get_config = getattr(library, f"{prefix}openblas_get_config{suffix}")
            except AttributeError:
                continue
            get_config.restype = ctypes.c_char_p
            int64 = b"USE64BITINT" in (get_config() or b"")
            addresses = [ctypes.cast(function, ctypes.c_void_p).value for function in functions]
            threads = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
            if threads is not None:
                threads.restype, threads.argtypes = ctypes.c_int, []
            return CBlas(*addresses, int64, path, threads)
    return None


@functools.lru_cache(maxsize=1)
def numpy_cblas() -> CBlas | None:
    """NumPy's cblas gemm and gemv functions, or None where they cannot be found (see above)."""
    if os.environ.get("TINYLM_NUMPY_BLAS", "1") == "0":
        return None
    try:
        files = _numpy_openblas_files()
    except Exception:  # threadpoolctl could not inspect this process: no fast path
        return None
    for path in files:
        found = _find_in(path)
        if found is not None:
            return found
    return None


def team_may_call_blas() -> bool:
    """False while NumPy's OpenBLAS runs on threads of its own (the kernels called directly,
    with no cython backend holding it at one: ``tinylm/backends.py``). A kernel whose OpenMP
    team calls BLAS then runs on one thread, so that two pools do not fight over the cores."""
    found = numpy_cblas()
    return found is None or found.thread_count() <= 1
