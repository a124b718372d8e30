"""The argument checks of every kernel wrapper, Cython (``kernels/cpu/*.pyx``) and CUDA
(``kernels/cuda/*.py``), imported as ``tinylm.kernels.checks``.

A compiled loop indexes without bounds checks and a CUDA kernel cannot raise, so a
wrapper checks, before any loop or launch, what the C code needs: each array's dtype,
contiguity and writability, every size or index that decides where the kernel reads or
writes, and that each scalar is a value of its C type. Shape agreement that cannot make
a kernel read or write out of bounds is the op's business (``tinylm/ops``), not a
wrapper's.

Each check has one meaning wherever it is used, so a bad argument gets the same error
from both backends, and every error names the op and the argument
("layer_norm_forward: eps must be a real number, got str"). Importing this module
imports NumPy only; a CuPy array is recognised by its type's module, without importing
CuPy.
"""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT64_RANGE = (-(2**63), 2**63 - 1)
UINT64_RANGE = (0, 2**64 - 1)


# ------------------------------------------------------------------------- arrays


def is_cupy(value) -> bool:
    """Whether ``value`` is a CuPy array (or any other object of CuPy's)."""
    return type(value).__module__.split(".")[0] == "cupy"


def float_dtype(op: str, name: str, array) -> np.dtype:
    """The dtype of ``array`` (anything else is read as NumPy would), which must be float32
    or float64 (a TypeError otherwise)."""
    dtype = np.dtype(array.dtype) if hasattr(array, "dtype") else np.asarray(array).dtype
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {dtype}")
    return dtype


def float_array(op: str, name: str, value) -> np.ndarray:
    """``value`` as a NumPy array (``np.asarray``: lists and scalars are welcome), which
    must be float32 or float64. For the Cython kernels, which take NumPy arrays only."""
    array = np.asarray(value)
    float_dtype(op, name, array)
    return array


def same_dtype(op: str, reference_name: str, reference, **arrays) -> None:
    """Every array in ``arrays`` (None skipped) has ``reference``'s dtype: a kernel reads
    all of them through pointers of one C type."""
    for name, array in arrays.items():
        if array is not None and array.dtype != reference.dtype:
            raise TypeError(f"{op}: {name} is {array.dtype}, expected {reference.dtype} like {reference_name}")


def array_module_of(op: str, name: str, value):
    """NumPy or CuPy, the module of ``value`` (a NumPy scalar counts as a 0-d NumPy
    array); a TypeError for anything else. CuPy is imported only for a CuPy array."""
    if isinstance(value, (np.ndarray, np.generic)):
        return np
    if is_cupy(value):
        import cupy

        return cupy
    raise TypeError(f"{op}: {name} must be a NumPy or CuPy array, got {type(value).__name__}")


def as_array(op: str, name: str, value, xp, index: bool = False):
    """``value``, an array of module ``xp`` (NumPy or CuPy). Anything but an array is a
    TypeError, and so is a float array of the other module: nothing is copied between
    the CPU and the GPU behind the caller's back, except (``index=True``) integer index
    arrays such as ids and targets, which are small and which the reference on CuPy
    accepts from the host too."""
    on_host = isinstance(value, (np.ndarray, np.generic))
    if not on_host and not is_cupy(value):
        raise TypeError(f"{op}: {name} must be a NumPy or CuPy array, got {type(value).__name__}")
    if on_host == (xp is np):
        return value
    if index and on_host:
        return xp.asarray(value)
    where, others = ("NumPy", "CuPy") if on_host else ("CuPy", "NumPy")
    raise TypeError(f"{op}: {name} is a {where} array but the other inputs are {others} arrays")


def contiguous_arrays(op: str, xp, dtype, **arrays) -> list:
    """Every array as a C-contiguous array of ``dtype`` in module ``xp`` (NumPy or CuPy),
    in the order given: the layer kernels read several arrays through pointers of one C
    type. A TypeError names the op and the array that is not one."""
    out = []
    for name, value in arrays.items():
        value = as_array(op, name, value, xp)
        if value.dtype != dtype:
            raise TypeError(f"{op}: {name} is {value.dtype}, expected {dtype} like the others")
        out.append(xp.ascontiguousarray(value))
    return out


# ------------------------------------------------------------------------ scalars


def real_scalar(op: str, name: str, value) -> float:
    """A real number, Python or NumPy (not a bool, not an array), as a Python float: the
    value a kernel receives as a C float or double. inf and NaN are real numbers here,
    as in the reference; a kernel computes with them like any other value."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond a double's range
        raise ValueError(f"{op}: {name} is too large for a C double, got {value}") from None


def int_scalar(op: str, name: str, value, low: int | None = None, high: int | None = None) -> int:
    """An integer, Python or NumPy (not a bool), as a Python int, within [low, high] when
    given: the range of the C type it is passed as, or the range the kernel assumes."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
        raise ValueError(f"{op}: {name} must be {bounds}, got {value}")
    return value


def flag(op: str, name: str, value) -> bool:
    """True or False (a Python or NumPy bool), as a Python bool; integers are refused,
    so a flag cannot be confused with a count."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be True or False, got {type(value).__name__}")
    return bool(value)
